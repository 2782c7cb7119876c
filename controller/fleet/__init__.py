"""The fleet core: what runs where, from messages in to messages out (docs/architecture.md).
Pure logic returning Publish effects; service.py is the one I/O shell."""
