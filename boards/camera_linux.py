# A Linux board's camera (a workload's `camera` input, firmware/source_camera.py): Picamera2
# (libcamera: the Pi's CSI cameras) where it is installed, else V4L2 through OpenCV (USB
# webcams, and CSI cameras on a legacy stack). Neither is a dependency of edgefleet: a board
# without them says what to install when a camera workload comes.
#
# The profile's "camera": {"device": 0 or "/dev/video0" (V4L2 only), "width", "height"}: the
# capture size (default 640 x 480); the source resizes frames to the model's input.
DEFAULT_SIZE = (640, 480)


class Picamera2Camera:
    def __init__(self, picamera2_class, size):
        self.cam = picamera2_class()
        # RGB888 is libcamera's name for B, G, R bytes in memory order: read() flips it to RGB.
        self.cam.configure(self.cam.create_still_configuration(main={"size": size, "format": "RGB888"}))
        self.cam.start()

    def read(self):
        return self.cam.capture_array("main")[:, :, ::-1], None

    def close(self):
        self.cam.stop()
        self.cam.close()


class V4L2Camera:
    def __init__(self, cv2, device, size):
        self.cv2 = cv2
        self.cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not self.cap.isOpened():
            raise OSError("cannot open V4L2 camera %r" % (device,))
        self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self.device = device

    def read(self):
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise OSError("V4L2 camera %r gave no frame" % (self.device,))
        return frame[:, :, ::-1] if frame.ndim == 3 else frame, None   # OpenCV's BGR to RGB

    def close(self):
        self.cap.release()


def open_camera(settings):
    size = (int(settings.get("width", DEFAULT_SIZE[0])), int(settings.get("height", DEFAULT_SIZE[1])))
    device = settings.get("device")
    if device is None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            pass
        else:
            try:
                return Picamera2Camera(Picamera2, size)
            except (RuntimeError, IndexError) as e:   # no camera attached, or it is busy
                raise OSError("Picamera2: %s" % e)
    try:
        import cv2
    except ImportError:
        raise OSError("no camera library: install Picamera2 (apt install python3-picamera2) for a CSI "
                      "camera, or OpenCV (pip install opencv-python-headless) for V4L2")
    return V4L2Camera(cv2, 0 if device is None else device, size)
