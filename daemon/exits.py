"""framewatch's exit codes, one name each (README, "Use"; the systemd unit restarts on them)."""

EXIT_OK = 0
# The recording failed (bad input, failed chunks), or the service stopped on an error it could
# not survive (a crashed worker loop, a GPU already in use).
EXIT_FAILED = 1
EXIT_USAGE = 2  # a usage or config error
EXIT_MODEL = 3  # the model (or a plugin's analyzer) could not be loaded, or does not fit the budget
EXIT_FORCED = 4  # a second SIGTERM/SIGINT while stopping: left without waiting for the chunk
# A non-OOM CUDA error left the CUDA context unusable: systemd restarts the service
# (RestartForceExitStatus=75) and the chunk, released back to pending, runs again.
EXIT_CUDA = 75
# `framewatch analyze`: the same file's chunks are held by another process (a second analyze, or
# the daemon); nothing was done here. Run it again once that one has finished.
EXIT_BUSY = 5
# The store cannot be opened or read (a corrupt database file, a directory without permission, a
# server that refuses): one line says why, no traceback.
EXIT_STORE = 6
