/*
 * A hostile guest init for VM mode: run as the guest's PID 1 (ISOLATE_INIT),
 * it attacks the host through everything the VMM reads from the guest.
 *
 * usage (as /init, the first argument from the kernel command line is
 * ignored): the behaviour comes from the file /hostile-mode in the initrd,
 * or, without it, "all":
 *   garbage   random bytes on every port and the console
 *   oversize  one endless control line (no newline, ever)
 *   flood     unbounded output on every port
 *   lies      well-formed reports with out-of-range numbers, then silence
 *   console   terminal escapes and garbage on the kernel console only (for
 *             --console-log, which copies it to the host's stderr), then a
 *             line that is not a control message
 *   all       garbage, lies, oversize and flood in turn
 * It never reports a normal exit: the host must end the run by itself, with
 * a clear error, holding bounded memory.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static int ports[16];
static int nports;
static int console = -1;

static void open_ports(void) {
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mkdir("/sys", 0555);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    DIR *d = opendir("/dev");
    struct dirent *e;
    while (d && (e = readdir(d)) && nports < 15) {
        if (!strncmp(e->d_name, "vport", 5) || !strncmp(e->d_name, "hvc", 3)) {
            char p[300];
            snprintf(p, sizeof p, "/dev/%s", e->d_name);
            int fd = open(p, O_RDWR | O_NONBLOCK | O_NOCTTY);
            if (fd < 0)
                continue;
            /* Raw, as isolate's init makes them: no echo of what the host
             * sends, so that the host sees only what this init writes. */
            struct termios t;
            if (tcgetattr(fd, &t) == 0) {
                cfmakeraw(&t);
                tcsetattr(fd, TCSANOW, &t);
            }
            ports[nports++] = fd;
        }
    }
    console = open("/dev/console", O_WRONLY | O_NONBLOCK | O_NOCTTY);
    if (console >= 0)
        ports[nports++] = console;
}

static void write_all_ports(const void *b, size_t n) {
    for (int i = 0; i < nports; i++)
        (void)write(ports[i], b, n);
}

static void garbage(int rounds) {
    unsigned char b[4096];
    unsigned x = 12345;
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < sizeof b; i++) {
            x = x * 1103515245 + 12345;
            b[i] = x >> 16;
        }
        write_all_ports(b, sizeof b);
    }
}

static void oversize(size_t bytes) {
    char b[4096];
    memset(b, 'A', sizeof b);
    memcpy(b, "{\"t\":\"exit\",\"message\":\"", 23);
    for (size_t sent = 0; sent < bytes; sent += sizeof b) {
        write_all_ports(b, sizeof b);
        memset(b, 'A', 23);
    }
}

static void flood(size_t bytes) {
    char b[65536];
    memset(b, 'x', sizeof b);
    for (size_t sent = 0; sent < bytes; sent += sizeof b)
        write_all_ports(b, sizeof b);
}

static void lies(void) {
    const char *l[] = {
        "{\"t\":\"started\",\"uptime_ns\":18446744073709551615}\n",
        "{\"t\":\"exit\",\"status\":{\"exited\":99999},\"peak_memory\":18446744073709551615,\"cpu_time_ns\":18446744073709551615}\n",
        "{\"t\":\"exit\",\"status\":{\"signaled\":-7},\"peak_memory\":1,\"cpu_time_ns\":1}\n",
        "{\"t\":\"error\",\"exec\":null,\"message\":\"\\u001b]0;pwned\\u0007\\u001b[2J terminal escape\"}\n",
    };
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        write_all_ports(l[i], strlen(l[i]));
}

static void console_escapes(void) {
    const char *e[] = {
        "\033]0;hostile title\007",          /* window title (OSC) */
        "\033[2J\033[H",                    /* clear the screen */
        "\033[6n",                           /* ask the terminal to answer */
        "\302\233" "31m C1 CSI\r\n",      /* U+009B, 8-bit CSI */
        "\342\200\256 bidi override\r\n", /* U+202E */
        "\r overwritten \b\b\b\n",
    };
    fcntl(console, F_SETFL, 0); /* blocking: nothing is dropped */
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++)
        (void)write(console, e[i], strlen(e[i]));
    unsigned char b[256];
    unsigned x = 777;
    for (int r = 0; r < 32; r++) {
        for (size_t i = 0; i < sizeof b; i++) {
            x = x * 1103515245 + 12345;
            b[i] = x >> 16;
        }
        (void)write(console, b, sizeof b);
    }
    (void)write(console, "\n", 1);
    /* Every byte reaches the host before the run is ended. */
    tcdrain(console);
    sleep(1);
    const char *bad = "not a control message\n";
    for (int i = 0; i < nports; i++)
        if (ports[i] != console)
            (void)write(ports[i], bad, strlen(bad));
}

int main(void) {
    open_ports();
    char mode[32] = "all";
    int f = open("/hostile-mode", O_RDONLY);
    if (f >= 0) {
        ssize_t n = read(f, mode, sizeof mode - 1);
        mode[n > 0 ? n : 0] = 0;
        mode[strcspn(mode, "\n")] = 0;
    }
    int all = !strcmp(mode, "all");
    if (!strcmp(mode, "console") && console >= 0)
        console_escapes();
    if (all || !strcmp(mode, "garbage"))
        garbage(256);
    if (all || !strcmp(mode, "lies"))
        lies();
    if (all || !strcmp(mode, "oversize"))
        oversize((size_t)64 << 20);
    if (all || !strcmp(mode, "flood"))
        for (;;)
            flood((size_t)1 << 30);
    for (;;)
        pause();
}
