"""Putting edgefleet on boards: images, the serial flasher and the code it sends to a board,
provisioning over SSH, the bundle signing key."""
