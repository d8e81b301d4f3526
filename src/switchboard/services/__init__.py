"""The lab services that stand beside the main server, each on its own port.

``reverse``  a line-based UTF-8 string-reversal service over TCP (grapheme-correct).
``udpchat``  a UDP chat room with unique nicknames that copes with loss and reordering.

Each is split like the rest of Switchboard: a sans-I/O core (``core`` / ``codec``, ``room``,
``peer``) that only turns bytes and clock readings into decisions, and thin asyncio shells.
"""
