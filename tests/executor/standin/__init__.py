"""Test support for the engine adapters: stand-in dump programs (executable scripts
that play a tool which cannot be installed here) and a reader of /proc that shows
what a running tool and its children expose to other users of the machine."""
