"""What is inside a partition: detection (a few KiB) and read-only views of formats the kernel
cannot loop-mount directly (jffs2 without MTD, Android boot images, sparse images)."""
