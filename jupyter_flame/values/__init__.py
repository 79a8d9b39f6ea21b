"""What travels between a kernel and its runners, and how (used by both sides).

``capture`` (which names a cell reads and binds, pure), ``shipping`` (pickling with buffers out
of band, content digests, local modules by value), ``remote`` (rebuilding a runner's exception).
"""
