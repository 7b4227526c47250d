"""The FUSE face of mtkfs: the inode tree and the pyfuse3 ``Operations``."""
