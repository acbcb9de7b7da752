# The user's default Python environment first on PATH (see /usr/local/lib/mlab/user-env).
. /usr/local/lib/mlab/user-env
