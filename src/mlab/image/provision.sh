#!/usr/bin/env bash
# Provision a HomePod image: run as root inside a Debian (bookworm) or Ubuntu (22.04+) root
# filesystem, from the directory holding this script, packages.txt and rootfs/.
#
# Used by both builds (docs/image.md):
#   - the Containerfile (production, `podman|buildah|docker build`, any Debian/Ubuntu base,
#     including nvidia/cuda *-cudnn-*-ubuntu22.04), with MLAB_SRC=/tmp/mlab-src (the source
#     tree: the mlab package is installed with its dependencies);
#   - `mlab image build --local` (mmdebstrap customize hook), with MLAB_REQUIREMENTS=FILE
#     (only mlab's dependencies; the package itself is a thin layer added later so editing
#     MLab's code does not redo this step).
# Idempotent: running it twice gives the same result.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

log() { echo "provision: $*" >&2; }

# 1. Packages (a no-op under mmdebstrap, which installed them already).
pkgs=$(sed 's/#.*//' "$here/packages.txt" | xargs)
if ! dpkg-query -W $pkgs >/dev/null 2>&1; then
  log "installing packages"
  apt-get update -qq
  avail=()
  for p in $pkgs; do
    if apt-cache show "$p" >/dev/null 2>&1; then avail+=("$p"); else log "WARNING: no package $p here; skipped"; fi
  done
  apt-get install -y -qq --no-install-recommends "${avail[@]}" >/dev/null
fi

# 2. Locales: en_US.UTF-8 and zh_CN.UTF-8 (CJK fonts come with fonts-noto-cjk).
for l in "en_US.UTF-8 UTF-8" "zh_CN.UTF-8 UTF-8"; do
  grep -qxF "$l" /etc/locale.gen 2>/dev/null || echo "$l" >> /etc/locale.gen
done
locale-gen >/dev/null

# 3. The rootfs overlay: entrypoint, supervisor config, session scripts.
cp -a "$here/rootfs/." /
chmod 0755 /usr/local/sbin/mlab-entrypoint /usr/local/lib/mlab/*

# 4. Services: none starts at build time; host keys and the RDP key are made per container
#    by the entrypoint (an image built once must not carry one key into every HomePod).
rm -f /etc/ssh/ssh_host_*
rm -f /etc/xrdp/key.pem /etc/xrdp/cert.pem
usermod -a -G ssl-cert xrdp 2>/dev/null || true
# xrdp: only the Xvnc session type (no xorgxrdp); no drive, sound or remote-app channels
# (drive redirection would copy files past the export review); root may not log in; the
# session is our startwm.sh, not one from the user's home.
python3 - <<'PY'
import re
p = "/etc/xrdp/xrdp.ini"
s = open(p).read()
s = re.sub(r"(?ms)^\[Xorg\]\n.*?(?=^\[)", "", s)
for key, value in {"rdpdr": "false", "rdpsnd": "false", "rail": "false", "xrdpvr": "false",
                   "tcutils": "false", "EnableSyslog": "false", "LogFile": "/dev/null",
                   "#EnableConsole": "EnableConsole=true", "#ConsoleLevel": "ConsoleLevel=INFO"}.items():
    line = value if "=" in value else f"{key}={value}"
    s = re.sub(rf"(?m)^{key}=.*$", line, s)
open(p, "w").write(s)
p = "/etc/xrdp/sesman.ini"
s = open(p).read()
for key, value in {"AllowRootLogin": "false", "EnableUserWindowManager": "false",
                   "EnableSyslog": "false", "LogFile": "/dev/null",
                   "#EnableConsole": "EnableConsole=true", "#ConsoleLevel": "ConsoleLevel=INFO"}.items():
    line = value if "=" in value else f"{key}={value}"
    s = re.sub(rf"(?m)^{key}=.*$", line, s)
open(p, "w").write(s)
PY
# XFCE: the panel's default layout system-wide, so no "first start" dialog appears.
install -d /etc/xdg/xfce4/xfconf/xfce-perchannel-xml
[ -e /etc/xdg/xfce4/panel/default.xml ] && cp /etc/xdg/xfce4/panel/default.xml /etc/xdg/xfce4/xfconf/xfce-perchannel-xml/xfce4-panel.xml
# XFCE, lighter (issue 18: every desktop session, VNC and each RDP login, runs its own
# copy): no panel plugins a HomePod has no use for (sound: there is none; power: no
# battery; the notification bell: xfce4-notifyd still shows notifications), each a
# process of 5-6 MiB private memory, and no Thunar daemon (5 MiB; the file manager still
# starts on demand). Edited in place, so the layout of any base's XFCE version is kept.
python3 - <<'PY'
import os
import xml.etree.ElementTree as ET

d = "/etc/xdg/xfce4/xfconf/xfce-perchannel-xml"
drop = {"pulseaudio", "power-manager-plugin", "notification-plugin"}
p = f"{d}/xfce4-panel.xml"
if os.path.exists(p):
    tree = ET.parse(p)
    plugins = tree.find("./property[@name='plugins']")
    ids = set()
    for prop in list(plugins if plugins is not None else []):
        if prop.get("value") in drop:
            ids.add(prop.get("name").removeprefix("plugin-"))
            plugins.remove(prop)
    for array in tree.iter("property"):
        if array.get("name") == "plugin-ids":
            for value in list(array):
                if value.get("value") in ids:
                    array.remove(value)
    tree.write(p, encoding="UTF-8", xml_declaration=True)
p = f"{d}/xfce4-session.xml"
if os.path.exists(p):
    tree = ET.parse(p)
    for session in tree.iter("property"):
        count = session.find("./property[@name='Count']")
        if count is None:
            continue
        clients = []
        for i in range(int(count.get("value"))):
            props = [session.find(f"./property[@name='Client{i}_{k}']") for k in ("Command", "Priority", "PerScreen")]
            command = props[0]
            if command is not None and command[0].get("value") == "Thunar":
                for prop in props:
                    if prop is not None:
                        session.remove(prop)
                continue
            clients.append(props)
        for i, props in enumerate(clients):  # clients are numbered from 0 without gaps
            for key, prop in zip(("Command", "Priority", "PerScreen"), props):
                if prop is not None:
                    prop.set("name", f"Client{i}_{key}")
        count.set("value", str(len(clients)))
    tree.write(p, encoding="UTF-8", xml_declaration=True)
PY
# Base images with a uid-1000 account (ubuntu:24.04) would clash with the HomePod user.
id ubuntu >/dev/null 2>&1 && userdel -r ubuntu 2>/dev/null || true
mkdir -p /run/sshd /run/xrdp /var/run/xrdp
# Debian's supervisor package ships a config that the entrypoint does not use.
rm -f /etc/supervisor/conf.d/*.conf 2>/dev/null || true
# noVNC: index.html opens the client.
[ -e /usr/share/novnc/index.html ] || ln -s vnc.html /usr/share/novnc/index.html

# 5. The mlab command: a venv at /opt/mlab/venv (Python 3.11+), /usr/local/bin/mlab.
py=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  log "python3 is older than 3.11: installing python3.11 for the mlab venv"
  apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv >/dev/null
  py=python3.11
fi
[ -x /opt/mlab/venv/bin/python ] || "$py" -m venv /opt/mlab/venv
pipi() { /opt/mlab/venv/bin/pip install -q --disable-pip-version-check --no-cache-dir "$@"; }
if [ -n "${MLAB_REQUIREMENTS:-}" ]; then
  log "installing mlab's dependencies"
  pipi -r "$MLAB_REQUIREMENTS"
fi
if [ -n "${MLAB_SRC:-}" ]; then
  log "installing mlab from $MLAB_SRC"
  pipi "$MLAB_SRC"
fi
ln -sf /opt/mlab/venv/bin/mlab /usr/local/bin/mlab

# 6. The pristine package state, for the Airlock's apt staging (docs/CONTRACTS.md).
mkdir -p /usr/share/mlab/pristine
cp /var/lib/dpkg/status /usr/share/mlab/pristine/status
{
  cat /etc/apt/sources.list 2>/dev/null || true
  for f in /etc/apt/sources.list.d/*.list; do [ -e "$f" ] && cat "$f"; done
} > /usr/share/mlab/pristine/sources.list
for f in /etc/apt/sources.list.d/*.sources; do
  [ -e "$f" ] && cp "$f" /usr/share/mlab/pristine/
done

# 7. Smaller image.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache 2>/dev/null || true
log "done"
