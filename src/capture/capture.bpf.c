// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The kernel side of a capture: where the opens of one leaking target happen.
//
// Two programs, attached by userspace as uprobes to the C library of each armed process
// only (perf events scoped to one PID: no other process is touched): `on_open` returns
// from open/openat (and the library's own no-cancel open), `on_connect` enters connect.
// A new fd is reported only when it is the capture's target: a file by its inode
// (device and inode number, so relative paths and links match), a connection by its
// peer address; anything else costs a hash lookup and a return. A report carries the fd, its inode, the Python frames of the calling thread
// (code object and last instruction, read from the interpreter's own frame list: no
// unwinding) and the native user stack as far as frame pointers reach. Reports per
// capture are capped (`budget`); past the cap the program only counts.
//
// Struct layouts of the kernel come from its BTF (CO-RE): the definitions below name only
// the fields read, and the loader relocates their offsets.

#include <linux/types.h>
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define MAX_PY 32
#define MAX_NATIVE 24
#define MAX_SLOTS 64
#define AF_INET 2
#define AF_INET6 10

struct super_block {
	__u32 s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	struct files_struct *files;
	struct thread_struct thread;
} __attribute__((preserve_access_index));

// What userspace armed for one process: the capture's slot and the interpreter's layout.
struct target {
	__u32 slot;
	__u32 limit;
	// 0: not Python. 1: the thread state points to the current frame (3.9, 3.10,
	// 3.13 and later); 2: to a cframe that does (3.11, 3.12).
	__u32 python;
	__u32 pad;
	__u64 off_frame;	// PyThreadState.frame, .cframe or .current_frame
	__u64 off_current;	// _PyCFrame.current_frame
	__u64 off_code;		// the frame's code object (f_code, f_executable)
	__u64 off_previous;	// the calling frame (f_back, previous)
	__u64 off_instr;	// where it stopped (f_lasti, prev_instr, instr_ptr)
	__u64 off_owner;	// its owner byte (3.12 and later), else 0
};

struct file_key {
	__u32 slot;
	__u32 dev;
	__u64 ino;
};

struct peer_key {
	__u32 slot;
	__u16 family;
	__u16 port;		// network order, as in the sockaddr
	__u8 addr[16];
};

struct pyframe {
	__u64 code;
	__u64 instr;
};

#define KIND_OPEN 1
#define KIND_CONNECT 2

struct event {
	__u32 tgid;
	__u32 tid;
	__u32 fd;
	__u32 kind;
	__u32 dev;
	__u32 npy;
	__u64 ino;
	__s64 native_bytes;
	struct pyframe py[MAX_PY];
	__u64 ips[MAX_NATIVE];
	// For a connect (an entry probe): the caller's return address, still on top of the
	// stack, which the frame-pointer walk does not see yet.
	__u64 caller;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct target);
} targets SEC(".maps");

// A thread's Python thread state, by process and by the thread's own pointer (its fs
// base, which glibc's pthread_self() returns and CPython keeps as thread_id): a forked
// worker's thread has its parent's, so one entry per process and thread state serves.
struct thread_key {
	__u32 tgid;
	__u32 pad;
	__u64 self;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct thread_key);
	__type(value, __u64);
} pythreads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct file_key);
	__type(value, __u8);
} files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct peer_key);
	__type(value, __u8);
} peers SEC(".maps");

// Reports made (or refused past the limit) per slot.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

static __always_inline int fd_inode(__u32 fd, __u32 *dev, __u64 *ino)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return -1;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return -1;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return -1;
	*ino = BPF_CORE_READ(f, f_inode, i_ino);
	*dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	return 0;
}

static __always_inline int report(struct pt_regs *ctx, struct target *t, __u32 tgid,
				  __u32 fd, __u32 kind, __u32 dev, __u64 ino)
{
	__u32 slot = t->slot;
	__u32 *used = bpf_map_lookup_elem(&budget, &slot);
	if (!used)
		return 0;
	if (__sync_fetch_and_add(used, 1) >= t->limit)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	e->tgid = tgid;
	e->tid = tid;
	e->fd = fd;
	e->kind = kind;
	e->dev = dev;
	e->ino = ino;
	e->npy = 0;
	__u64 *tstate = 0;
	if (t->python) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct thread_key tk = { .tgid = tgid, .self = BPF_CORE_READ(task, thread.fsbase) };
		tstate = bpf_map_lookup_elem(&pythreads, &tk);
	}
	if (tstate) {
		__u64 frame = 0;
		bpf_probe_read_user(&frame, sizeof(frame), (void *)(*tstate + t->off_frame));
		if (t->python == 2 && frame)
			bpf_probe_read_user(&frame, sizeof(frame), (void *)(frame + t->off_current));
		__u32 n = 0;
		// Entry shims (owned by the C stack or the interpreter) are passed over, so a
		// few more frames than are kept may be walked.
		for (int i = 0; i < MAX_PY + 8; i++) {
			if (!frame || n >= MAX_PY)
				break;
			__u64 code = 0, instr = 0, prev = 0;
			if (bpf_probe_read_user(&code, sizeof(code), (void *)(frame + t->off_code)) ||
			    bpf_probe_read_user(&instr, sizeof(instr), (void *)(frame + t->off_instr)) ||
			    bpf_probe_read_user(&prev, sizeof(prev), (void *)(frame + t->off_previous)))
				break;
			__u8 owner = 0;
			if (t->off_owner)
				bpf_probe_read_user(&owner, sizeof(owner), (void *)(frame + t->off_owner));
			// Written in any case, kept (n moves on) only below 3: no branch, so the
			// verifier does not follow two paths a frame.
			__u32 keep = ((__u32)owner - 3) >> 31;
			e->py[n & (MAX_PY - 1)].code = code;
			e->py[n & (MAX_PY - 1)].instr = instr;
			n += keep;
			frame = prev;
		}
		e->npy = n;
	}
	e->native_bytes = bpf_get_stack(ctx, e->ips, sizeof(e->ips), BPF_F_USER_STACK);
	e->caller = 0;
	if (kind == KIND_CONNECT)
		bpf_probe_read_user(&e->caller, sizeof(e->caller), (void *)PT_REGS_SP(ctx));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("uretprobe")
int on_open(struct pt_regs *ctx)
{
	// The C library returns an int: -1 on failure.
	int ret = (int)PT_REGS_RC(ctx);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct target *t = bpf_map_lookup_elem(&targets, &tgid);
	if (!t || ret < 0)
		return 0;
	struct file_key k = { .slot = t->slot };
	if (fd_inode((__u32)ret, &k.dev, &k.ino))
		return 0;
	if (!bpf_map_lookup_elem(&files, &k))
		return 0;
	return report(ctx, t, tgid, (__u32)ret, KIND_OPEN, k.dev, k.ino);
}

// At entry: the connection may still fail, and then its socket is usually closed; the
// check at the end of the window keeps only fds still open on the same inode.
SEC("uprobe")
int on_connect(struct pt_regs *ctx)
{
	int fd = (int)PT_REGS_PARM1(ctx);
	const void *uaddr = (const void *)PT_REGS_PARM2(ctx);
	int addrlen = (int)PT_REGS_PARM3(ctx);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct target *t = bpf_map_lookup_elem(&targets, &tgid);
	if (!t || fd < 0)
		return 0;
	struct peer_key k = { .slot = t->slot };
	__u8 raw[24] = {};
	if (addrlen < 8 || bpf_probe_read_user(raw, addrlen < 24 ? 8 : 24, uaddr))
		return 0;
	k.family = raw[0] | (raw[1] << 8);
	k.port = raw[2] | (raw[3] << 8);
	if (k.family == AF_INET && addrlen >= 16) {
		__builtin_memcpy(k.addr, &raw[4], 4);
	} else if (k.family == AF_INET6 && addrlen >= 24) {
		__builtin_memcpy(k.addr, &raw[8], 16);
	} else {
		return 0;
	}
	if (!bpf_map_lookup_elem(&peers, &k))
		return 0;
	__u32 dev = 0;
	__u64 ino = 0;
	if (fd_inode((__u32)fd, &dev, &ino))
		return 0;
	return report(ctx, t, tgid, (__u32)fd, KIND_CONNECT, dev, ino);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
