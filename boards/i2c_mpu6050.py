# Driver of an MPU-6050 accelerometer on I2C, for a `sensor` input (firmware/source_sensor.py):
# one axis's acceleration per reading. Wired in the board profile's "sensors":
#
#   "accel_x": {"i2c": {"bus": 0, "sda": 21, "scl": 22, "freq": 400000}, "addr": 104,
#               "driver": "mpu6050", "axis": "x"}
#
# A reading is the axis's signed 16-bit register pair as offset binary (0..65535, 32768 at
# zero g; +-2 g full scale after reset), the same range an ADC's read_u16 gives, so a workload's
# scale/offset work the same for both. Nothing is allocated per reading: the register pair is
# read into a buffer made once, and combined in small ints.
PWR_MGMT_1 = 0x6B
ACCEL_XOUT_H = 0x3B
AXES = {"x": 0, "y": 2, "z": 4}


def reader(i2c, wiring):
    """Wake the chip (it powers up asleep) and return the function that takes one reading;
    OSError naming what is wrong."""
    addr = wiring.get("addr", 0x68)
    axis = wiring.get("axis", "x")
    if axis not in AXES:
        raise OSError("mpu6050: axis must be x, y or z, not %r" % axis)
    try:
        i2c.writeto_mem(addr, PWR_MGMT_1, b"\x00")
    except OSError as e:
        raise OSError("mpu6050 at I2C address %d does not answer: %s" % (addr, e))
    register = ACCEL_XOUT_H + AXES[axis]
    pair = bytearray(2)
    read_into = i2c.readfrom_mem_into

    def read():
        read_into(addr, register, pair)
        return ((pair[0] << 8) | pair[1]) ^ 0x8000
    return read
