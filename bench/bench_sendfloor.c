/* SPDX-License-Identifier: MIT */
/*
 * bench_sendfloor: the kernel's share of a gateway delivery on this machine.
 *
 * A gateway delivery ends in one send() of a frame to one client's TCP
 * socket; on loopback that send also runs the receiving side's TCP stack and
 * wakes the reader, all on the sender's CPU time. This program measures that
 * floor with nothing else around it: a reader process (one epoll loop, like
 * bench/loadgen) holds N loopback connections, and the writer sends F-byte
 * frames round-robin over them at a fixed rate, one send() per frame, in
 * ticks of 1 ms. It prints the writer's CPU time per send (median of runs):
 * compare it with the gateway's CPU per delivery that bench/run_loadgen.sh
 * prints at the same rate (scenario 2: 20,000 deliveries/s over 2,000
 * connections).
 *
 * Environment: MB_BENCH_QUICK, MB_BENCH_RUNS (bench_util.h);
 * MB_SENDFLOOR_CONNS (2000), MB_SENDFLOOR_RATE (20000 per second),
 * MB_SENDFLOOR_BYTES (300), MB_SENDFLOOR_SECONDS (5).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_sendfloor: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The reader: accept nothing, just drain every connection until they close. */
static void reader(int *fds, int n)
{
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
            die("epoll_ctl");
    }
    static char buf[65536];
    int open = n;
    struct epoll_event evs[256];
    while (open > 0) {
        int k = epoll_wait(ep, evs, 256, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die("epoll_wait");
        for (int i = 0; i < k; i++) {
            ssize_t r = recv(evs[i].data.fd, buf, sizeof buf, 0);
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, evs[i].data.fd, NULL);
                close(evs[i].data.fd);
                open--;
            }
        }
    }
    _exit(0);
}

static double run_once(int n, long rate, long bytes, double seconds)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0)
        die("listen");
    int *cl = malloc(sizeof *cl * (size_t)n), *sv = malloc(sizeof *sv * (size_t)n);
    if (!cl || !sv)
        die("malloc");
    for (int i = 0; i < n; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (cl[i] < 0 || connect(cl[i], (struct sockaddr *)&a, sizeof a) < 0)
            die("connect");
        sv[i] = accept(ls, NULL, NULL);
        if (sv[i] < 0)
            die("accept");
        int one = 1;
        setsockopt(sv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(ls);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        for (int i = 0; i < n; i++)
            close(sv[i]);
        reader(cl, n);
    }
    for (int i = 0; i < n; i++)
        close(cl[i]);

    char *frame = malloc((size_t)bytes);
    if (!frame)
        die("malloc");
    memset(frame, 'x', (size_t)bytes);
    long per_tick = rate / 1000 > 0 ? rate / 1000 : 1;
    long ticks = (long)(seconds * 1000);
    double cpu0 = bu_self_cpu_s();
    uint64_t start = bu_now_ns();
    long sent = 0;
    int next = 0;
    for (long t = 0; t < ticks; t++) {
        for (long j = 0; j < per_tick; j++) {
            if (send(sv[next], frame, (size_t)bytes, MSG_NOSIGNAL) == bytes)
                sent++;
            next = (next + 1) % n;
        }
        uint64_t due = start + (uint64_t)(t + 1) * 1000000u;
        uint64_t now = bu_now_ns();
        if (due > now) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(due - now)};
            nanosleep(&ts, NULL);
        }
    }
    double cpu = bu_self_cpu_s() - cpu0;
    for (int i = 0; i < n; i++)
        close(sv[i]);
    waitpid(pid, NULL, 0);
    free(frame);
    free(cl);
    free(sv);
    return sent ? cpu * 1e6 / (double)sent : 0;
}

int main(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int quick = bu_quick();
    int n = (int)env_long("MB_SENDFLOOR_CONNS", quick ? 50 : 2000);
    long rate = env_long("MB_SENDFLOOR_RATE", quick ? 2000 : 20000);
    long bytes = env_long("MB_SENDFLOOR_BYTES", 300);
    double seconds = (double)env_long("MB_SENDFLOOR_SECONDS", quick ? 1 : 5);
    int runs = bu_runs(3);
    if (n < 1 || rate < 1 || bytes < 1 || seconds <= 0) {
        fprintf(stderr, "bench_sendfloor: bad MB_SENDFLOOR_* setting\n");
        return 2;
    }
    double v[32];
    if (runs > 32)
        runs = 32;
    for (int r = 0; r < runs; r++)
        v[r] = run_once(n, rate, bytes, seconds);
    printf("send floor: %d loopback connections, %ld sends/s of %ld bytes, %d runs of %.0f s\n", n,
           rate, bytes, runs, seconds);
    printf("  writer CPU per send (median): %.2f us\n", bu_median(v, (size_t)runs));
    return 0;
}
