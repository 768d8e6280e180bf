/*
 * sysprobe: a static glibc program run inside the guest by boot-qemu.sh.
 * It exercises the kernel interfaces that common static and glibc programs
 * rely on and prints one line per probe:
 *
 *     CHECK <name> PASS|FAIL <detail>
 *
 * Build: gcc -static -O2 -pthread -o sysprobe sysprobe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <mqueue.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void report(const char *name, int ok, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    printf("CHECK %s %s %s\n", name, ok ? "PASS" : "FAIL", detail);
    fflush(stdout);
    if (!ok)
        failures++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void probe_getrandom(void)
{
    unsigned char buf[32];
    double t0 = now_s();
    ssize_t n = getrandom(buf, sizeof buf, 0); /* blocks until the CRNG is ready */
    report("getrandom", n == (ssize_t)sizeof buf, "n=%zd waited=%.3fs%s%s", n, now_s() - t0,
           n < 0 ? " err=" : "", n < 0 ? strerror(errno) : "");
}

static void probe_memfd(void)
{
    int fd = memfd_create("sysprobe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    struct stat st = {0};
    int ok = fd >= 0 && write(fd, "hello", 5) == 5 && fstat(fd, &st) == 0 && st.st_size == 5 &&
             fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0;
    report("memfd_create", ok, "fd=%d size=%lld %s", fd, (long long)st.st_size, ok ? "" : strerror(errno));
    if (fd >= 0)
        close(fd);
}

static void probe_eventfd_epoll(void)
{
    int efd = eventfd(0, EFD_CLOEXEC);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN}, out;
    uint64_t one = 1;
    int ok = efd >= 0 && ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0 &&
             write(efd, &one, 8) == 8 && epoll_wait(ep, &out, 1, 1000) == 1;
    report("eventfd_epoll", ok, "%s", ok ? "eventfd wakes epoll_wait" : strerror(errno));
}

static void probe_signalfd(void)
{
    sigset_t set;
    struct signalfd_siginfo si;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, SFD_CLOEXEC);
    int ok = fd >= 0 && raise(SIGUSR1) == 0 && read(fd, &si, sizeof si) == sizeof si &&
             si.ssi_signo == SIGUSR1;
    report("signalfd", ok, "%s", ok ? "SIGUSR1 read from signalfd" : strerror(errno));
}

static void probe_timerfd(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {.it_value = {.tv_nsec = 10 * 1000 * 1000}};
    uint64_t exp = 0;
    int ok = fd >= 0 && timerfd_settime(fd, 0, &its, NULL) == 0 && read(fd, &exp, 8) == 8 && exp >= 1;
    report("timerfd", ok, "expirations=%llu", (unsigned long long)exp);
}

static volatile sig_atomic_t timer_fired;
static void on_timer(int sig) { (void)sig; timer_fired = 1; }

static void probe_posix_timer(void)
{
    timer_t t;
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN};
    struct itimerspec its = {.it_value = {.tv_nsec = 5 * 1000 * 1000}};
    signal(SIGRTMIN, on_timer);
    int ok = timer_create(CLOCK_MONOTONIC, &sev, &t) == 0 && timer_settime(t, 0, &its, NULL) == 0;
    for (int i = 0; ok && !timer_fired && i < 200; i++)
        usleep(10000);
    report("posix_timer", ok && timer_fired, "fired=%d", (int)timer_fired);
}

static void *thread_fn(void *arg) { return (void *)((intptr_t)arg + 1); }

static void probe_threads_futex(void)
{
    pthread_t th[4];
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    intptr_t sum = 0;
    int ok = 1;
    for (intptr_t i = 0; i < 4; i++)
        ok &= pthread_create(&th[i], NULL, thread_fn, (void *)i) == 0;
    for (int i = 0; i < 4 && ok; i++) {
        void *r;
        ok &= pthread_join(th[i], &r) == 0;
        pthread_mutex_lock(&m);
        sum += (intptr_t)r;
        pthread_mutex_unlock(&m);
    }
    report("threads_futex", ok && sum == 10, "sum=%ld", (long)sum);
}

static void probe_sysv_ipc(void)
{
    int shm = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    char *p = shm >= 0 ? shmat(shm, NULL, 0) : (void *)-1;
    int sem = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    int msq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    int ok = shm >= 0 && p != (void *)-1 && sem >= 0 && msq >= 0;
    if (p != (void *)-1) {
        strcpy(p, "x");
        shmdt(p);
    }
    if (shm >= 0) shmctl(shm, IPC_RMID, NULL);
    if (sem >= 0) semctl(sem, 0, IPC_RMID);
    if (msq >= 0) msgctl(msq, IPC_RMID, NULL);
    report("sysv_ipc", ok, "shm=%d sem=%d msg=%d", shm, sem, msq);
}

static void probe_posix_mq_shm(void)
{
    struct mq_attr a = {.mq_maxmsg = 4, .mq_msgsize = 64};
    char buf[64];
    mqd_t q = mq_open("/sysprobe", O_CREAT | O_RDWR, 0600, &a);
    int ok = q != (mqd_t)-1 && mq_send(q, "hi", 2, 0) == 0 && mq_receive(q, buf, sizeof buf, NULL) == 2;
    report("posix_mqueue", ok, "%s", ok ? "send/receive" : strerror(errno));
    if (q != (mqd_t)-1) {
        mq_close(q);
        mq_unlink("/sysprobe");
    }
    int fd = shm_open("/sysprobe", O_CREAT | O_RDWR, 0600); /* needs tmpfs on /dev/shm */
    ok = fd >= 0 && ftruncate(fd, 4096) == 0;
    report("posix_shm", ok, "%s", ok ? "shm_open in /dev/shm" : strerror(errno));
    if (fd >= 0) {
        close(fd);
        shm_unlink("/sysprobe");
    }
}

static void probe_locks_inotify(void)
{
    unlink("/tmp/sysprobe.lock");
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    int wd = in >= 0 ? inotify_add_watch(in, "/tmp", IN_CREATE) : -1;
    int fd = open("/tmp/sysprobe.lock", O_CREAT | O_RDWR, 0600);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int ok = fd >= 0 && flock(fd, LOCK_EX) == 0 && fcntl(fd, F_SETLK, &fl) == 0;
    report("file_locking", ok, "%s", ok ? "flock + fcntl(F_SETLK)" : strerror(errno));
    char ev[512];
    ok = wd >= 0 && read(in, ev, sizeof ev) > 0;
    report("inotify", ok, "%s", ok ? "IN_CREATE seen" : strerror(errno));
}

static void probe_pty(void)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    char *name = NULL;
    int s = -1;
    if (m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0 && (name = ptsname(m)))
        s = open(name, O_RDWR | O_NOCTTY);
    report("pty", s >= 0, "%s", s >= 0 ? name : strerror(errno));
}

static void probe_sockets(void)
{
    int sv[2];
    report("unix_socket", socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");

    /* Bring loopback up, then a TCP round trip on 127.0.0.1. */
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    int up = c >= 0 && ioctl(c, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP;
    up = up && ioctl(c, SIOCSIFFLAGS, &ifr) == 0;
    int l = socket(AF_INET, SOCK_STREAM, 0), k = socket(AF_INET, SOCK_STREAM, 0), a = -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    char b[4] = {0};
    int ok = up && l >= 0 && bind(l, (void *)&sa, sizeof sa) == 0 && listen(l, 1) == 0 &&
             getsockname(l, (void *)&sa, &len) == 0 && connect(k, (void *)&sa, sizeof sa) == 0 &&
             (a = accept(l, NULL, NULL)) >= 0 && write(k, "ping", 4) == 4 && read(a, b, 4) == 4;
    report("inet_loopback", ok, "lo_up=%d tcp port %d %s", up, ntohs(sa.sin_port), ok ? "" : strerror(errno));
}

/* Each namespace kind, unshared on its own in a child process. */
static void probe_namespaces(void)
{
    static const struct { const char *name; int flag; } ns[] = {
        {"mnt", CLONE_NEWNS},   {"uts", CLONE_NEWUTS},   {"ipc", CLONE_NEWIPC}, {"pid", CLONE_NEWPID},
        {"net", CLONE_NEWNET},  {"user", CLONE_NEWUSER}, {"cgroup", CLONE_NEWCGROUP},
    };
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        pid_t p = fork();
        if (p == 0) {
            if (unshare(ns[i].flag) != 0)
                _exit(10);
            if (ns[i].flag == CLONE_NEWPID) { /* the first child is PID 1 of the new namespace */
                pid_t q = fork();
                if (q == 0)
                    _exit(getpid() == 1 ? 0 : 11);
                int st;
                waitpid(q, &st, 0);
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 12);
            }
            if (ns[i].flag == CLONE_NEWUTS && sethostname("inner", 5) != 0)
                _exit(13);
            _exit(0);
        }
        int st = -1;
        waitpid(p, &st, 0);
        char name[32];
        snprintf(name, sizeof name, "ns_%s", ns[i].name);
        report(name, WIFEXITED(st) && WEXITSTATUS(st) == 0, "unshare status=%d",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

static void probe_seccomp(void)
{
    pid_t p = fork();
    if (p == 0) {
        struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
        struct sock_fprog prog = {.len = 1, .filter = f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
            _exit(1);
        _exit(0);
    }
    int st = -1;
    waitpid(p, &st, 0);
    report("seccomp_filter", WIFEXITED(st) && WEXITSTATUS(st) == 0, "status=%d", st);
}

int main(void)
{
    struct utsname u;
    uname(&u);
    printf("sysprobe: kernel %s %s, %ld cpus online\n", u.release, u.machine, sysconf(_SC_NPROCESSORS_ONLN));
    alarm(60); /* never hang the boot test */
    probe_getrandom();
    probe_memfd();
    probe_eventfd_epoll();
    probe_signalfd();
    probe_timerfd();
    probe_posix_timer();
    probe_threads_futex();
    probe_sysv_ipc();
    probe_posix_mq_shm();
    probe_locks_inotify();
    probe_pty();
    probe_sockets();
    probe_namespaces();
    probe_seccomp();
    printf("sysprobe: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
