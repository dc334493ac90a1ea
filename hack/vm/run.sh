# shellcheck shell=bash
# `hack/vm.sh run`, sourced by hack/vm.sh after build.sh.
#
# QEMU runs chrooted in the cached trixie/sid root inside a private mount
# namespace (its bind mounts die with it), under setpriv --pdeathsig and
# unshare --kill-child (it dies with this script, even on SIGKILL). Disk
# images live in a per-run directory removed on exit; a directory left by
# a run that was SIGKILLed is removed by the next run.

RUN_USAGE="usage: hack/vm.sh run [--disk LBA:UNIT[:boundary=B][:size=S]]... [--mem M] [--timeout S] [--allow-reset] [--dbroot trixie|sid] -- COMMAND..."

# to_bytes 16Ki|64K|4096|1M -> bytes (binary suffixes)
to_bytes() {
	local v=$1 n u
	n=${v%%[!0-9]*}
	u=${v#"$n"}
	[ -n "$n" ] || return 1
	case $u in
	"" | B) echo "$n" ;;
	K | Ki | KiB | k) echo $((n * 1024)) ;;
	M | Mi | MiB) echo $((n * 1024 * 1024)) ;;
	G | Gi | GiB) echo $((n * 1024 * 1024 * 1024)) ;;
	*) return 1 ;;
	esac
}

is_pow2() { [ "$1" -gt 0 ] && [ $(($1 & ($1 - 1))) -eq 0 ]; }

# parse_disk SPEC -> sets D_LBA D_UNIT D_BOUNDARY D_SIZE or dies naming the fault
parse_disk() {
	local spec=$1 f k v
	IFS=: read -r -a f <<<"$spec"
	[ "${#f[@]}" -ge 2 ] || die "--disk $spec: want LBA:UNIT[:boundary=B][:size=S]"
	D_LBA=$(to_bytes "${f[0]}") || die "--disk $spec: LBA '${f[0]}' is not a size"
	D_UNIT=$(to_bytes "${f[1]}") || die "--disk $spec: UNIT '${f[1]}' is not a size"
	D_BOUNDARY=0
	D_SIZE=$((4 * 1024 * 1024 * 1024))
	for kv in "${f[@]:2}"; do
		k=${kv%%=*} v=${kv#*=}
		case $k in
		boundary) D_BOUNDARY=$(to_bytes "$v") || die "--disk $spec: boundary '$v' is not a size" ;;
		size) D_SIZE=$(to_bytes "$v") || die "--disk $spec: size '$v' is not a size" ;;
		*) die "--disk $spec: unknown option '$k' (boundary=, size=)" ;;
		esac
	done
	case $D_LBA in 512 | 4096) ;; *) die "--disk $spec: LBA must be 512 or 4096" ;; esac
	if ! is_pow2 "$D_UNIT" || [ "$D_UNIT" -lt "$D_LBA" ]; then
		die "--disk $spec: UNIT must be a power of two >= the LBA size"
	fi
	[ $((D_UNIT / D_LBA)) -le 65536 ] || die "--disk $spec: UNIT is more than 65536 blocks"
	if [ "$D_BOUNDARY" -ne 0 ]; then
		if ! is_pow2 "$D_BOUNDARY" || [ "$D_BOUNDARY" -lt "$D_UNIT" ]; then
			die "--disk $spec: boundary must be a power of two >= UNIT"
		fi
		[ $((D_BOUNDARY / D_LBA)) -le 65536 ] || die "--disk $spec: boundary is more than 65536 blocks"
	fi
	if [ $((D_SIZE % (1024 * 1024))) -ne 0 ] || [ "$D_SIZE" -lt $((64 * 1024 * 1024)) ]; then
		die "--disk $spec: size must be a whole number of MiB, at least 64M"
	fi
}

# Remove run directories whose vm.sh is gone (a SIGKILLed run).
reap_stale_runs() {
	local d pid
	for d in "$VM_CACHE"/run/*; do
		[ -d "$d" ] || continue
		pid=${d##*/}
		pid=${pid%%-*}
		kill -0 "$pid" 2>/dev/null || rm -rf "$d"
	done
}

# dbroot_image SUITE: prints the read-only disk image of the database
# chroot hack/dbroot.sh builds for SUITE (PostgreSQL 17 and MariaDB 11.8 in
# trixie, PostgreSQL 18 in sid), made once per chroot and cached. The guest
# mounts it at /dbroot (guest-init.sh); the image adds the empty mount
# points the guest binds into it (/untorn, /pgdata, /pgwal).
dbroot_image() {
	local dir img stage
	dir=$("$REPO/hack/dbroot.sh" "$1") || return 1
	[ -d "$dir" ] || return 1
	img=$VM_CACHE/dbroot-${dir##*/}.img
	(
		flock 9
		[ -e "$img" ] && exit 0
		stage=$VM_CACHE/dbroot-stage.$$
		rm -rf "$stage"
		# Hard links: the chroot is not copied, only named again.
		cp -al "$dir" "$stage" && mkdir -p "$stage/untorn" "$stage/pgdata" "$stage/pgwal" &&
			mkfs.ext4 -q -F -L untorn-dbroot -d "$stage" "$img.tmp" "$(($(du -sm "$stage" | cut -f1) * 13 / 10 + 64))M" >/dev/null &&
			mv "$img.tmp" "$img"
		rc=$?
		rm -rf "$stage" "$img.tmp"
		exit $rc
	) 9>"$VM_CACHE/.dbroot.lock" >&2 || return 1
	echo "$img"
}

cmd_run() {
	local mem=2G timeout=900 allow_reset="" disks=() i dbroot=""
	while [ $# -gt 0 ]; do
		case $1 in
		--disk) [ $# -ge 2 ] || die "--disk needs a value"; parse_disk "$2"; disks+=("$2"); shift 2 ;;
		--disk=*) parse_disk "${1#*=}"; disks+=("${1#*=}"); shift ;;
		--mem) [ $# -ge 2 ] || die "--mem needs a value"; mem=$2; shift 2 ;;
		--mem=*) mem=${1#*=}; shift ;;
		--timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout=$2; shift 2 ;;
		--timeout=*) timeout=${1#*=}; shift ;;
		--allow-reset) allow_reset=1; shift ;;
		--dbroot)
			[ $# -ge 2 ] || die "--dbroot needs a suite (trixie or sid)"
			case $2 in trixie | sid) ;; *) die "--dbroot '$2': the database roots are trixie and sid" ;; esac
			dbroot=$2
			shift 2
			;;
		--) shift; break ;;
		*) die "unknown argument '$1'; $RUN_USAGE" ;;
		esac
	done
	[ $# -gt 0 ] || die "no COMMAND; $RUN_USAGE"
	if ! [[ $timeout =~ ^[0-9]+$ ]] || [ "$timeout" -eq 0 ]; then die "--timeout '$timeout' is not a number of seconds"; fi
	[[ $mem =~ ^[0-9]+[MG]?$ ]] || die "--mem '$mem' is not a size like 2048M or 2G"

	vm_build_quiet
	local dbimg=""
	[ -z "$dbroot" ] || dbimg=$(dbroot_image "$dbroot") || die "the $dbroot database root is not available"
	reap_stale_runs
	RUN_DIR=$VM_CACHE/run/$$-$(date +%s)
	mkdir -p "$RUN_DIR"
	QPID="" WATCHDOG=""
	trap 'run_cleanup' EXIT
	trap 'echo "vm: interrupted" >&2; exit 130' INT TERM HUP

	# The binaries disk: project binaries, guest scripts and the command.
	local stage=$RUN_DIR/stage
	stage_binaries "$stage"
	{
		echo '# command given to hack/vm.sh run'
		printf '%q ' "$@"
		echo
	} >"$stage/cmd.sh"
	mkfs.ext4 -q -F -L untorn-bin -d "$stage" "$RUN_DIR/bin.img" >/dev/null \
		"$(($(du -sm "$stage" | cut -f1) * 12 / 10 + 32))M" || die "cannot build the binaries disk"
	rm -rf "$stage"

	local qargs=() n b
	for i in "${!disks[@]}"; do
		parse_disk "${disks[$i]}"
		truncate -s "$D_SIZE" "$RUN_DIR/atomic$i.raw"
		n=$((D_UNIT / D_LBA - 1))
		local ns="nvme-ns,drive=nvm$i,bus=nvme$i,nsid=1,logical_block_size=$D_LBA,physical_block_size=$D_LBA"
		ns+=",atomic.nawun=$n,atomic.nawupf=$n"
		if [ "$D_BOUNDARY" -ne 0 ]; then
			b=$((D_BOUNDARY / D_LBA - 1))
			ns+=",atomic.nabsn=$b,atomic.nabspf=$b"
		fi
		qargs+=(-drive "file=/vm/run/${RUN_DIR##*/}/atomic$i.raw,if=none,id=nvm$i,format=raw,cache=none,aio=threads"
			-device "nvme,id=nvme$i,serial=untorn-atomic$i,atomic.dn=off,atomic.awun=$n,atomic.awupf=$n"
			-device "$ns")
	done
	local nonce kdir
	nonce=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	kdir=/vm/kernel-$KV/$(kernel_moddir "$VM_CACHE/kernel-$KV" | sed "s|^$VM_CACHE/kernel-$KV/||")
	local accel=${UNTORN_VM_ACCEL:-tcg}
	qargs=(-machine q35 -accel "$accel" -cpu "${UNTORN_VM_CPU:-qemu64}" -smp "${UNTORN_VM_CPUS:-2}" -m "$mem"
		-display none -nodefaults -no-user-config -nic none
		-chardev "stdio,id=con,signal=off" -serial chardev:con
		-monitor "unix:/vm/run/${RUN_DIR##*/}/monitor.sock,server=on,wait=off"
		-kernel "$kdir/vmlinuz" -initrd "/vm/${INITRAMFS##*/}"
		-append "console=ttyS0 rdinit=/init panic=-1 cryptomgr.notests no_timer_check mitigations=off audit=0 tsc=unstable loglevel=${UNTORN_VM_LOGLEVEL:-3} untorn.nonce=$nonce untorn.debug=${UNTORN_VM_DEBUG:-0} untorn.disks=${#disks[@]}"
		-drive "file=/vm/${ROOT_IMG##*/},if=none,id=root,format=raw,readonly=on"
		-device "virtio-blk-pci,drive=root,serial=untorn-root"
		-drive "file=/vm/run/${RUN_DIR##*/}/bin.img,if=none,id=bin,format=raw,readonly=on"
		-device "virtio-blk-pci,drive=bin,serial=untorn-bin"
		"${qargs[@]}")
	[ -n "$allow_reset" ] || qargs+=(-no-reboot)
	[ -z "$dbimg" ] || qargs+=(-drive "file=/vm/${dbimg##*/},if=none,id=dbroot,format=raw,readonly=on"
		-device "virtio-blk-pci,drive=dbroot,serial=untorn-dbroot")
	# Extra QEMU arguments for diagnostics, e.g. "-trace pci_nvme_write".
	local extra=()
	read -r -a extra <<<"${UNTORN_VM_QEMU_ARGS:-}"
	qargs+=("${extra[@]}")

	mkfifo "$RUN_DIR/console"
	local q=$VM_CACHE/qemu-$QEMU_KEY
	# shellcheck disable=SC2016 # the inner shell expands its own arguments
	setpriv --pdeathsig KILL -- unshare --mount --propagation private --fork --kill-child -- /bin/sh -ec '
		q=$1 c=$2; shift 2
		mount -t proc proc "$q/proc"
		mount --rbind /dev "$q/dev"
		mkdir -p "$q/vm"
		mount --bind "$c" "$q/vm"
		exec chroot "$q" qemu-system-x86_64 "$@"' sh "$q" "$VM_CACHE" "${qargs[@]}" \
		</dev/null >"$RUN_DIR/console" 2>&1 &
	QPID=$!
	(
		trap 'kill "$sp" 2>/dev/null; exit 0' TERM
		sleep "$timeout" &
		sp=$!
		wait "$sp"
		echo "vm: the guest did not finish within ${timeout}s; killing QEMU" >&2
		kill -KILL "$QPID" 2>/dev/null
	) &
	WATCHDOG=$!

	local line status="" qrc=0
	while IFS= read -r line; do
		line=${line%$'\r'}
		if [[ $line == "UNTORN_VM_EXIT=$nonce:"* ]]; then
			status=${line##*:}
			continue
		fi
		printf '%s\n' "$line"
	done <"$RUN_DIR/console"
	{ wait "$QPID"; } 2>/dev/null || qrc=$?
	QPID=""
	if ! kill -0 "$WATCHDOG" 2>/dev/null; then
		WATCHDOG=""
		exit 124
	fi
	if [ -z "$status" ]; then
		echo "vm: the guest stopped without reporting an exit status (QEMU exit $qrc)" >&2
		exit 125
	fi
	exit "$status"
}

run_cleanup() {
	local rc=$?
	set +e # every step must run, whatever failed before
	if [ -n "${QPID:-}" ]; then
		# unshare ignores TERM while it waits; KILL takes QEMU down with it.
		kill -KILL "$QPID" 2>/dev/null
		wait "$QPID" 2>/dev/null
	fi
	if [ -n "${WATCHDOG:-}" ]; then
		kill "$WATCHDOG" 2>/dev/null
		wait "$WATCHDOG" 2>/dev/null
	fi
	[ -n "${RUN_DIR:-}" ] && rm -rf "$RUN_DIR"
	return "$rc"
}
