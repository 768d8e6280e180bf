/*
 * Probes of the isolation boundary, run as the workload (and one, `pty`,
 * run on the host as the caller). Built static, so it runs in any rootfs.
 *
 * Exit status of a probe run as the workload:
 *   0  the attempt SUCCEEDED (the boundary let it through)
 *   1  the attempt was refused (the boundary held)
 *   2  the probe itself could not run (bad arguments, missing file)
 *   4  the kernel does not implement the call at all (ENOSYS past every filter)
 * and one line on stdout saying what happened, with the errno.
 *
 * usage: probe NAME [ARGS...]; `probe list` prints the names.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef TIOCSTI
#define TIOCSTI 0x5412
#endif

static int escaped(const char *what) {
    printf("ESCAPED: %s\n", what);
    return 0;
}

static int held(const char *what, int err) {
    printf("held: %s (%s)\n", what, strerror(err));
    return 1;
}

/* ok != 0: the call went through. */
static int verdict(const char *what, int ok) {
    int e = errno;
    return ok ? escaped(what) : held(what, e);
}

static int p_tiocsti(int argc, char **argv) {
    const char *text = argc > 2 ? argv[2] : "id\n";
    for (const char *c = text; *c; c++)
        if (ioctl(0, TIOCSTI, c) != 0)
            return held("TIOCSTI into the caller's terminal", errno);
    return escaped("TIOCSTI pushed input into the caller's terminal");
}

static int p_tiocsti_ctty(int argc, char **argv) {
    (void)argc;
    (void)argv;
    int fd = open("/dev/tty", O_RDWR);
    if (fd < 0)
        return held("open /dev/tty (the caller's controlling terminal)", errno);
    char c = 'x';
    if (ioctl(fd, TIOCSTI, &c) != 0)
        return held("TIOCSTI on /dev/tty", errno);
    return escaped("TIOCSTI on /dev/tty reached a controlling terminal");
}

static int p_open_dev(int argc, char **argv) {
    if (argc < 5)
        return 2;
    unsigned maj = atoi(argv[3]), min = atoi(argv[4]);
    mode_t kind = argv[2][0] == 'b' ? S_IFBLK : S_IFCHR;
    const char *node = "/tmp/.probe-dev";
    unlink(node);
    if (mknod(node, kind | 0600, makedev(maj, min)) != 0 && errno != EEXIST) {
        printf("held: mknod %s %u:%u (%s)\n", argv[2], maj, min, strerror(errno));
        return 1;
    }
    int fd = open(node, O_RDONLY | O_NONBLOCK);
    int e = errno;
    unlink(node);
    char what[96];
    snprintf(what, sizeof what, "open of host device %s %u:%u", argv[2], maj, min);
    errno = e;
    return verdict(what, fd >= 0);
}

static int p_mount(int argc, char **argv) {
    (void)argc;
    (void)argv;
    mkdir("/tmp/.probe-mnt", 0700);
    return verdict("mount tmpfs", mount("probe", "/tmp/.probe-mnt", "tmpfs", 0, NULL) == 0);
}

static int p_umount(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return verdict("umount /proc", umount2("/proc", MNT_DETACH) == 0);
}

static int p_remount(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return verdict("remount / read-write",
                   mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0);
}

/* Writes a host-wide sysctl with the value it already has. */
static int p_sysctl(int argc, char **argv) {
    (void)argc;
    (void)argv;
    const char *path = "/proc/sys/vm/overcommit_ratio";
    char buf[32] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0)
        return 2;
    close(fd);
    fd = open(path, O_WRONLY);
    if (fd < 0)
        return held("open a host sysctl for writing", errno);
    return verdict("write a host sysctl", write(fd, buf, strlen(buf)) > 0);
}

/* 'h' only prints the help to the kernel log: harmless if it gets through. */
static int p_sysrq(int argc, char **argv) {
    (void)argc;
    (void)argv;
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0)
        return held("open /proc/sysrq-trigger", errno);
    return verdict("write /proc/sysrq-trigger", write(fd, "h", 1) == 1);
}

static int p_kcore(int argc, char **argv) {
    (void)argc;
    (void)argv;
    int fd = open("/proc/kcore", O_RDONLY);
    if (fd < 0)
        return held("open /proc/kcore", errno);
    char b[64];
    ssize_t n = read(fd, b, sizeof b);
    if (n <= 0) {
        printf("held: /proc/kcore reads empty (masked)\n");
        return 1;
    }
    return escaped("read kernel memory through /proc/kcore");
}

static int p_kallsyms(int argc, char **argv) {
    (void)argc;
    (void)argv;
    FILE *f = fopen("/proc/kallsyms", "r");
    if (!f)
        return held("open /proc/kallsyms", errno);
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strtoull(line, NULL, 16) != 0)
            return escaped("/proc/kallsyms shows kernel addresses");
    printf("held: /proc/kallsyms shows no addresses\n");
    return 1;
}

static int p_unshare(int argc, char **argv) {
    int flag = 0;
    const char *k = argc > 2 ? argv[2] : "user";
    if (!strcmp(k, "user"))
        flag = CLONE_NEWUSER;
    else if (!strcmp(k, "mnt"))
        flag = CLONE_NEWNS;
    else if (!strcmp(k, "net"))
        flag = CLONE_NEWNET;
    else
        return 2;
    char what[64];
    snprintf(what, sizeof what, "unshare a new %s namespace", k);
    return verdict(what, unshare(flag) == 0);
}

static int p_cgroup(int argc, char **argv) {
    (void)argc;
    (void)argv;
    mkdir("/tmp/.probe-cg", 0700);
    if (mount("cgroup2", "/tmp/.probe-cg", "cgroup2", 0, NULL) != 0 &&
        mount("cgroup", "/tmp/.probe-cg", "cgroup", 0, "memory") != 0)
        return held("mount a cgroup hierarchy", errno);
    int fd = open("/tmp/.probe-cg/cgroup.procs", O_WRONLY);
    if (fd < 0)
        return held("open the root cgroup.procs", errno);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", getpid());
    return verdict("move into the root cgroup", write(fd, pid, strlen(pid)) > 0);
}

static int p_proc1_root(int argc, char **argv) {
    (void)argc;
    (void)argv;
    struct stat a, b;
    if (stat("/", &a) != 0)
        return 2;
    if (stat("/proc/1/root/", &b) != 0)
        return held("stat /proc/1/root", errno);
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return escaped("/proc/1/root is another root than the workload's");
    printf("held: /proc/1/root is the workload's own root\n");
    return 1;
}

static int p_ptrace(int argc, char **argv) {
    (void)argc;
    (void)argv;
    pid_t c = fork();
    if (c == 0) {
        pause();
        _exit(0);
    }
    int ok = ptrace(PTRACE_ATTACH, c, 0, 0) == 0;
    int e = errno;
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    errno = e;
    return verdict("ptrace attach", ok);
}

static int p_keyctl(int argc, char **argv) {
    (void)argc;
    (void)argv;
    long r = syscall(SYS_add_key, "user", "isolate-probe", "x", 1, -2 /* process keyring */);
    return verdict("add_key", r >= 0);
}

static int p_bpf(int argc, char **argv) {
    (void)argc;
    (void)argv;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = 4;
    a.value_size = 4;
    a.max_entries = 1;
    return verdict("bpf map create", syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a) >= 0);
}

static int p_perf(int argc, char **argv) {
    (void)argc;
    (void)argv;
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.type = PERF_TYPE_SOFTWARE;
    a.config = PERF_COUNT_SW_CPU_CLOCK;
    a.exclude_kernel = 1;
    return verdict("perf_event_open", syscall(SYS_perf_event_open, &a, 0, -1, -1, 0) >= 0);
}

static int p_userfaultfd(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return verdict("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC) >= 0);
}

static int p_io_uring(int argc, char **argv) {
    (void)argc;
    (void)argv;
    char params[120];
    memset(params, 0, sizeof params);
    return verdict("io_uring_setup", syscall(425 /* io_uring_setup */, 1, params) >= 0);
}

static int p_vsock(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return verdict("socket(AF_VSOCK)", socket(AF_VSOCK, SOCK_STREAM, 0) >= 0);
}

static int p_settime(int argc, char **argv) {
    (void)argc;
    (void)argv;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return verdict("settimeofday", settimeofday(&tv, NULL) == 0);
}

/* EPERM: refused before the capability check passed; anything else
 * (ENOENT, EINVAL) means the caller held the capability. */
static int cap_gate(const char *what, long r) {
    if (r != 0 && errno == ENOSYS) {
        printf("n/a: %s: this kernel does not implement it\n", what);
        return 4;
    }
    if (r == 0 || errno != EPERM) {
        printf("ESCAPED: %s (got past the capability check: %s)\n", what,
               r == 0 ? "success" : strerror(errno));
        return 0;
    }
    return held(what, errno);
}

static int p_swapoff(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cap_gate("swapoff (CAP_SYS_ADMIN)", swapoff("/.probe-no-such-swap"));
}

static int p_module(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cap_gate("finit_module (CAP_SYS_MODULE)", syscall(SYS_finit_module, -1, "", 0));
}

static int p_kill(int argc, char **argv) {
    if (argc < 3)
        return 2;
    pid_t pid = atoi(argv[2]);
    /* In a pid namespace the number may name one of the workload's own
     * processes: never this one. */
    if (pid == getpid())
        return 2;
    return verdict("kill a host process by pid", kill(pid, SIGKILL) == 0);
}

static int p_connect(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return held("socket(AF_INET)", errno);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (ok)
        (void)write(s, "isolate-probe\n", 14);
    return verdict("connect to the host's loopback listener", ok);
}

/*
 * Host side: listens on 127.0.0.1:PORT for SECONDS and appends one line per
 * connection to FILE; prints "listening" once bound.
 */
static int p_listen(int argc, char **argv) {
    if (argc < 5)
        return 2;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0) {
        perror("listen");
        return 2;
    }
    printf("listening\n");
    fflush(stdout);
    alarm(atoi(argv[4]));
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        char buf[64] = {0};
        (void)read(c, buf, sizeof buf - 1);
        FILE *f = fopen(argv[3], "a");
        if (f) {
            fprintf(f, "connection: %s\n", buf);
            fclose(f);
        }
        close(c);
    }
}

static int p_hostname(int argc, char **argv) {
    const char *name = argc > 2 ? argv[2] : "isolate-probe";
    return verdict("sethostname", sethostname(name, strlen(name)) == 0);
}

static int p_write(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
    char what[300];
    snprintf(what, sizeof what, "create %s", argv[2]);
    return verdict(what, fd >= 0);
}

/*
 * Host side: runs COMMAND on a new pseudo-terminal as its controlling
 * terminal (as an interactive shell would), relays its output to stdout,
 * and once it has ended prints what was left unread in the terminal's
 * input queue as `INJECTED:<bytes>` (nothing was injected: `INJECTED:`).
 * A shell on that terminal would have run those bytes as a command.
 */
static int p_pty(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int master, slave;
    if (openpty(&master, &slave, NULL, NULL, NULL) != 0) {
        perror("openpty");
        return 2;
    }
    struct termios t;
    tcgetattr(slave, &t);
    cfmakeraw(&t);
    tcsetattr(slave, TCSANOW, &t);
    pid_t c = fork();
    if (c == 0) {
        setsid();
        ioctl(slave, TIOCSCTTY, 0);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        close(master);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    int status = 0;
    char buf[4096];
    fcntl(master, F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t n;
        while ((n = read(master, buf, sizeof buf)) > 0)
            (void)write(1, buf, n);
        if (waitpid(c, &status, WNOHANG) == c)
            break;
        usleep(20000);
    }
    usleep(200000);
    fcntl(slave, F_SETFL, O_NONBLOCK);
    ssize_t n = read(slave, buf, sizeof buf - 1);
    if (n < 0)
        n = 0;
    buf[n] = 0;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\r')
            buf[i] = ' ';
    printf("\nINJECTED:%s\n", buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct probe {
    const char *name;
    int (*fn)(int, char **);
};

static const struct probe PROBES[] = {
    {"tiocsti", p_tiocsti},     {"tiocsti-ctty", p_tiocsti_ctty},
    {"open-dev", p_open_dev},   {"mount", p_mount},
    {"umount", p_umount},       {"remount-rw", p_remount},
    {"sysctl", p_sysctl},       {"sysrq", p_sysrq},
    {"kcore", p_kcore},         {"kallsyms", p_kallsyms},
    {"unshare", p_unshare},     {"cgroup", p_cgroup},
    {"proc1-root", p_proc1_root}, {"ptrace", p_ptrace},
    {"keyctl", p_keyctl},       {"bpf", p_bpf},
    {"perf", p_perf},           {"userfaultfd", p_userfaultfd},
    {"io_uring", p_io_uring},   {"vsock", p_vsock},
    {"settimeofday", p_settime}, {"swapoff", p_swapoff},
    {"module", p_module},       {"kill", p_kill},
    {"connect", p_connect},     {"hostname", p_hostname},
    {"write", p_write},         {"pty", p_pty},
    {"listen", p_listen},
};

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    for (size_t i = 0; i < sizeof PROBES / sizeof PROBES[0]; i++) {
        if (!strcmp(argv[1], "list"))
            printf("%s\n", PROBES[i].name);
        else if (!strcmp(argv[1], PROBES[i].name))
            return PROBES[i].fn(argc, argv);
    }
    return !strcmp(argv[1], "list") ? 0 : 2;
}
