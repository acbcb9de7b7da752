#!/bin/sh
# The xrdp session (xrdp-sesman runs it as the logged-in user on its own Xvnc display):
# a separate XFCE session with its own D-Bus, so it works while the VNC session is open.
if [ -r /etc/default/locale ]; then
  . /etc/default/locale
  export LANG
fi
unset DBUS_SESSION_BUS_ADDRESS SESSION_MANAGER XDG_RUNTIME_DIR
export XDG_SESSION_TYPE=x11 XDG_CURRENT_DESKTOP=XFCE NO_AT_BRIDGE=1
. /usr/local/lib/mlab/user-env  # ~/.venv first on PATH (terminals inherit it)
cd "$HOME"
exec dbus-run-session -- startxfce4
