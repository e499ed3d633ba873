/* SPDX-License-Identifier: MIT */
/*
 * listener.c - the gateway's listening socket and its admission control.
 *
 * libwebsockets 4.1's own listener accepts every connection waiting in the
 * backlog at once, and libuv then runs their handshakes in the same loop
 * iteration. In a reconnect storm (thousands of players within a second)
 * that made single iterations of a quarter of a second, and every chat line
 * of the players already connected waited behind them. So the gateway owns
 * the socket: it accepts at most `accept_batch` connections per loop
 * iteration, hands each to libwebsockets (lws_adopt_socket_vhost), and
 * stops watching the socket until the next iteration once the batch is
 * used. The kernel's backlog holds the rest meanwhile. The storm takes the
 * same CPU time in all, in short iterations between which NATS deliveries
 * and established players' frames are served.
 *
 * Out of file descriptors (EMFILE and the like), accepting pauses for
 * 100 ms rather than spinning on a socket that stays readable.
 *
 * The kernel grows a process's descriptor table by doubling it when a
 * descriptor past its end is allocated, and in a process with several
 * threads each doubling waits for an RCU grace period: 8-20 ms on the
 * development VM, inside accept() on the loop thread, six times over in a
 * 5,000-player storm. gw_fd_table_presize grows it once, at start, while
 * the gateway has a single thread (no grace period then); it never shrinks.
 */
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw.h"

#define PAUSE_MS  100 /* after the process or the system ran out of sockets */
#define FD_MARGIN 256 /* descriptors besides the connections: NATS, the store, libuv */

static void set_int(int fd, int level, int opt, int v)
{
    (void)setsockopt(fd, level, opt, &v, sizeof v);
}

/* What libwebsockets' own listener would set, plus the configured send
 * buffer: dead peers are found by TCP keepalive (60 s idle, then 3 probes
 * 10 s apart); frames go out at once. */
static void tune(const gw *g, int fd)
{
    set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, 60);
    set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, 10);
    set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, 3);
    if (g->cfg->socket_sndbuf)
        set_int(fd, SOL_SOCKET, SO_SNDBUF, (int)g->cfg->socket_sndbuf);
}

static void on_listen(uv_poll_t *p, int status, int events);

static void on_pause_end(uv_timer_t *t)
{
    gw *g = t->data;
    g->accept_paused = false;
    if (g->listening)
        uv_poll_start(&g->listen_poll, UV_READABLE, on_listen);
}

static void on_listen(uv_poll_t *p, int status, int events)
{
    (void)status, (void)events;
    gw *g = p->data;
    while (g->accept_left > 0) {
        int fd = accept4(g->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            gw_log("warn", "event=accept_failed error=\"%s\" pause_ms=%d", strerror(errno),
                   PAUSE_MS);
            uv_poll_stop(&g->listen_poll);
            g->accept_paused = true;
            uv_timer_start(&g->accept_pause, on_pause_end, PAUSE_MS, 0);
            return;
        }
        g->accept_left--;
        mb_counter_add(g->st.accepted, 1);
        tune(g, fd);
        /* On failure libwebsockets has closed fd. */
        if (!lws_adopt_socket_vhost(g->vhost, fd))
            gw_log("warn", "event=adopt_failed");
    }
    /* This iteration's batch is used: the rest wait in the backlog. */
    uv_poll_stop(&g->listen_poll);
    g->accept_deferred = true;
    mb_counter_add(g->st.accept_deferred, 1);
}

void gw_fd_table_presize(size_t conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur <= FD_MARGIN)
        return;
    rlim_t want = (rlim_t)conns + FD_MARGIN;
    if (want > rl.rlim_cur - 1)
        want = rl.rlim_cur - 1;
    if (want > INT32_MAX)
        want = INT32_MAX;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, (int)want); /* the lowest free one from `want` on */
    if (hi >= 0)
        close(hi);
    close(fd);
}

bool gw_listener_open(gw *g, char *msg, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", g->cfg->listen_port);
    int rc = getaddrinfo(g->cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        snprintf(msg, cap, "%s: %s", g->cfg->listen_host, gai_strerror(rc));
        return false;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(msg, cap, "%s:%d: %s", g->cfg->listen_host, g->cfg->listen_port,
                 strerror(err ? err : EADDRNOTAVAIL));
        return false;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(msg, cap, "getsockname: %s", strerror(errno));
        close(fd);
        return false;
    }
    g->listen_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                    : ((struct sockaddr_in *)&ss)->sin_port);
    g->listen_fd = fd;
    g->listen_open = true;
    return true;
}

void gw_listener_start(gw *g)
{
    g->accept_left = g->cfg->accept_batch;
    uv_poll_init(&g->loop, &g->listen_poll, g->listen_fd);
    g->listen_poll.data = g;
    uv_timer_init(&g->loop, &g->accept_pause);
    g->accept_pause.data = g;
    uv_poll_start(&g->listen_poll, UV_READABLE, on_listen);
    g->listening = true;
}

void gw_listener_iteration(gw *g)
{
    g->accept_left = g->cfg->accept_batch;
    if (g->accept_deferred && !g->accept_paused && g->listening) {
        g->accept_deferred = false;
        uv_poll_start(&g->listen_poll, UV_READABLE, on_listen);
    }
}

void gw_listener_close(gw *g)
{
    if (g->listening) {
        g->listening = false;
        uv_close((uv_handle_t *)&g->listen_poll, NULL);
        uv_close((uv_handle_t *)&g->accept_pause, NULL);
    }
    if (g->listen_open) {
        g->listen_open = false;
        close(g->listen_fd);
    }
}
