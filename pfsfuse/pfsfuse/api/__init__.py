"""The API every client uses: one interface, an in-process and a remote implementation."""
