#!/bin/sh
# The appliance's boot, run once by init before anything else: kernel file systems, modules,
# the data disk, the board key, first-boot settings and token, network, clock, logging. Then
# the root file system becomes read-only and init starts the gateway and the consoles
# (/etc/inittab). Everything that must survive a reboot lives on the data disk (/data).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 077
say() { echo "smimegw: $*"; }

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /run/smimegw

# Kernel modules (listed by the image build, dependencies first). The watchdog resets the
# machine 15 s after the gateway last reported itself healthy.
kver=$(uname -r)
while read -r mod; do
    case $mod in
    */i6300esb.ko) args="heartbeat=15" ;;
    *) args= ;;
    esac
    insmod "/lib/modules/$kver/$mod" $args 2>/dev/null
done </etc/modules.load

# The data disk: the first virtio disk. A blank one is formatted; one that will not mount is
# left alone (its data may be recoverable), and the gateway does not start.
disk=/dev/vda
if [ -b $disk ]; then
    if ! mount -t ext4 -o noatime,nodev,nosuid $disk /data 2>/dev/null; then
        if [ "$(dd if=$disk bs=4096 count=256 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]; then
            say "formatting the blank data disk $disk"
            mke2fs -L smimegw-data $disk >/dev/null &&
                mount -t ext4 -o noatime,nodev,nosuid $disk /data
        fi
    fi
fi
if grep -qs " /data " /proc/mounts; then
    # A factory reset asked for on the console (smimegw console: factory-reset).
    if [ -f /data/etc/factory-reset ]; then
        say "factory reset: erasing the data disk"
        for f in /data/* /data/.[!.]*; do
            [ -e "$f" ] && [ "$f" != /data/lost+found ] && rm -rf "$f"
        done
        sync
    fi
    mkdir -p /data/etc /data/smimegw /data/token /data/log
    data=yes
else
    say "no usable data disk ($disk): the gateway will not start until one is attached"
    data=
fi

# The board key: a secret of the hardware (QEMU hands it over through fw_cfg; a TPM or the
# SoC's key would on real boards). The token PINs are derived from it (smimegw-secret) and
# stored nowhere, so the data disk alone does not open the token.
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/smimegw
if [ -r $fw/board-key/raw ]; then
    cat $fw/board-key/raw >/run/smimegw/board.key
elif [ -n "$data" ]; then
    say "WARNING: no board key from the hardware; using one kept on the data disk"
    [ -s /data/etc/board.key ] || head -c 32 /dev/urandom >/data/etc/board.key
    cat /data/etc/board.key >/run/smimegw/board.key
fi

# First boot: settings (handed over by the host through fw_cfg, else the image's defaults).
if [ -n "$data" ] && [ ! -f /data/etc/smimegw.toml ]; then
    if [ -r $fw/config/raw ]; then
        cat $fw/config/raw >/data/etc/smimegw.toml.new
        say "first boot: settings provisioned by the host"
    else
        cp /etc/smimegw/smimegw.toml /data/etc/smimegw.toml.new
        say "first boot: default settings"
    fi
    sync
    mv /data/etc/smimegw.toml.new /data/etc/smimegw.toml
fi

# First boot: the SoftHSM2 token on the data disk.
export SOFTHSM2_CONF=/etc/softhsm2.conf
if [ -n "$data" ] && [ -s /run/smimegw/board.key ] &&
    ! softhsm2-util --module /usr/lib/softhsm/libsofthsm2.so --show-slots 2>/dev/null | grep -q 'Label: *smimegw *$'; then
    say "first boot: initialising the key token"
    if softhsm2-util --module /usr/lib/softhsm/libsofthsm2.so --init-token --free --label smimegw \
        --pin "$(smimegw-secret token-pin)" --so-pin "$(smimegw-secret token-so-pin)" >/dev/null; then
        sync
    else
        say "the key token could not be initialised"
    fi
fi

# Network: DHCP unless the console stored static settings (/data/etc/network.conf, lines
# of key=value: mode, address, gateway, dns, ntp, hostname).
mode=dhcp address= gateway= dns= name=smimegw
if [ -f /data/etc/network.conf ]; then
    while IFS='=' read -r k v; do
        case $k in
        mode) mode=$v ;;
        address) address=$v ;;
        gateway) gateway=$v ;;
        dns) dns=$v ;;
        hostname) name=$v ;;
        esac
    done </data/etc/network.conf
fi
hostname "$name"
ip link set lo up
ip link set eth0 up 2>/dev/null
: >/run/resolv.conf
chmod 644 /run/resolv.conf
case $mode in
static)
    ip addr add "$address" dev eth0 || say "network: bad address $address"
    [ -n "$gateway" ] && ip route add default via "$gateway"
    for s in $(echo "$dns" | tr ',' ' '); do echo "nameserver $s"; done >/run/resolv.conf
    ;;
*)
    udhcpc -i eth0 -s /etc/udhcpc.script -O ntpsrv -q -n -t 5 -T 1 >/dev/null 2>&1 ||
        say "network: no DHCP answer on eth0"
    ;;
esac

# Logs: on the data disk (/data/log/messages, rotated by smimegw-housekeeping), kept over
# reboots; without a data disk, a 1 MiB ring in memory (logread shows it).
if [ -n "$data" ]; then
    mkdir -p /data/log
    chmod 750 /data/log
    syslogd -O /data/log/messages
else
    syslogd -C1024
fi
klogd
i=0
while [ ! -S /dev/log ] && [ $i -lt 20 ]; do
    sleep 0.1
    i=$((i + 1))
done
logger -t smimegw-boot "appliance $(cat /etc/smimegw/version) booting"

# Clock: from the board's real-time clock (UTC), then NTP when servers are known and
# answer (smimegw-clock: the console's ntp setting, else DHCP's).
hwclock -s -u 2>/dev/null
if clock=$(smimegw-clock 2>&1); then
    [ -n "$clock" ] && say "clock: $clock"
else
    say "clock: NTP failed: $clock"
fi
smimegw-housekeeping </dev/null >/dev/null 2>&1 &

umask 022
mount -o remount,ro / || say "the root file system stays writable"
addr=$(ip -4 -o addr show eth0 2>/dev/null | awk '{print $4}')
say "appliance $(cat /etc/smimegw/version) up${addr:+ at $addr}"
