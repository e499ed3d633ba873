/* SPDX-License-Identifier: MIT */
/*
 * pgsrv: a throw-away PostgreSQL server for tests (the contract is pgsrv.h).
 *
 * Layout: a directory from mkdtemp under $TMPDIR (or /tmp) holding data/
 * (initdb's), server.log (the postmaster's stdout and stderr), tools.log
 * (initdb, pg_ctl, createdb) and the unix socket. Settings are appended to
 * data/postgresql.conf: the port, listen_addresses '127.0.0.1', the socket
 * directory, fsync and synchronous_commit off.
 *
 * Processes. The postmaster is forked and exec'd directly (by srvproc.c; not
 * daemonised by `pg_ctl start`), so it is our child: PR_SET_PDEATHSIG, set
 * after dropping to the postgres user (a credential change clears it), makes
 * the kernel SIGKILL it when the starting thread dies, and its backends exit
 * when they see it gone. Readiness is the "ready" status line pg_ctl itself
 * waits for in data/postmaster.pid. Stopping runs `pg_ctl stop -m fast` and
 * reaps the child; if that fails or takes over 10 s, the child is SIGKILLed.
 * Only the pid this module forked is ever signalled, and only until it is
 * reaped; freezing also stops (and thawing continues) that postmaster's own
 * children, found by their parent pid in /proc. Stopping a frozen server
 * thaws it first.
 * When run as root every child (initdb, postgres, pg_ctl, createdb) drops to
 * the postgres user before exec (setgid, setuid: what `runuser -u postgres`
 * does, without a PAM session).
 *
 * Errors go to stderr with a "pgsrv:" prefix; functions then return -1.
 */
#include "pgsrv.h"
#include "srvproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <dirent.h>
#include <glob.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS  10000
#define POLL_MS          20
#define START_TRIES      3

/* The prefix of this module's messages, and fail() to print one (srvproc.h). */
#define WHO       "pgsrv"
#define fail(...) srvproc_fail(WHO, __VA_ARGS__)

struct pgsrv {
    pid_t pid; /* the postmaster; 0 when not running or reaped */
    bool frozen;
    int port;
    srvproc_spawn_opts child; /* every child: run in dir, as postgres when root */
    char bindir[PATH_MAX];
    char dir[PATH_MAX];
    char data[PATH_MAX];
    char conf[PATH_MAX];
    char log[PATH_MAX];
    char tools_log[PATH_MAX];
    char pidfile[PATH_MAX];
    char url[128];
};

/* The bin directory of the newest PostgreSQL under /usr/lib/postgresql, or
 * $PGSRV_BINDIR. */
static int find_bindir(char out[PATH_MAX])
{
    const char *env = getenv("PGSRV_BINDIR");
    if (env && *env) {
        snprintf(out, PATH_MAX, "%s", env);
        return 0;
    }
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) != 0) {
        fail("no /usr/lib/postgresql/*/bin/postgres (apt-get install postgresql)");
        return -1;
    }
    long best = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *v = g.gl_pathv[i] + strlen("/usr/lib/postgresql/");
        long major = strtol(v, NULL, 10);
        if (major > best) {
            best = major;
            snprintf(out, PATH_MAX, "%.*s", (int)(strlen(g.gl_pathv[i]) - strlen("/postgres")),
                     g.gl_pathv[i]);
        }
    }
    globfree(&g);
    return 0;
}

/* A port that was free a moment ago (the kernel's pick for 127.0.0.1:0). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Whether data/postmaster.pid says the server accepts connections (its
 * eighth line is the status pg_ctl -w waits for). */
static bool pidfile_ready(const struct pgsrv *s)
{
    FILE *f = fopen(s->pidfile, "r");
    if (!f)
        return false;
    char line[256];
    int n = 0;
    bool ready = false;
    while (fgets(line, sizeof line, f)) {
        if (++n == 8) {
            ready = strncmp(line, "ready", 5) == 0;
            break;
        }
    }
    fclose(f);
    return ready;
}

/* SIGKILL and reap the postmaster (last resort). */
static void kill_and_reap(struct pgsrv *s)
{
    if (s->pid <= 0)
        return;
    int status;
    kill(s->pid, SIGKILL);
    if (srvproc_wait(s->pid, &status, 0) == -1)
        fail("waitpid %ld: %s", (long)s->pid, strerror(errno));
    s->pid = 0;
}

/* Wait up to ms for the postmaster to exit and reap it. true if it did. */
static bool reap_within(struct pgsrv *s, long long ms)
{
    long long deadline = srvproc_now_ms() + ms;
    for (;;) {
        int status;
        pid_t r = srvproc_wait(s->pid, &status, WNOHANG);
        if (r == s->pid || r == -1) {
            s->pid = 0;
            return true;
        }
        if (srvproc_now_ms() >= deadline)
            return false;
        srvproc_sleep_ms(POLL_MS);
    }
}

static int launch(struct pgsrv *s)
{
    char postgres[PATH_MAX];
    if (srvproc_path_join(WHO, postgres, s->bindir, "postgres") == -1)
        return -1;
    char *argv[] = {postgres, "-D", s->data, NULL};
    s->pid = srvproc_spawn(WHO, &s->child, argv, s->log);
    if (s->pid == -1) {
        s->pid = 0;
        return -1;
    }
    long long deadline = srvproc_now_ms() + START_TIMEOUT_MS;
    for (;;) {
        int status;
        pid_t r = srvproc_wait(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            char why[64];
            srvproc_describe_exit(status, why, sizeof why);
            fail("postgres %s before it accepted connections (port %d)", why, s->port);
            s->pid = 0;
            srvproc_print_tail(WHO, s->log);
            return -1;
        }
        if (pidfile_ready(s))
            return 0;
        if (srvproc_now_ms() >= deadline) {
            fail("postgres did not become ready within %d ms", START_TIMEOUT_MS);
            kill_and_reap(s);
            srvproc_print_tail(WHO, s->log);
            return -1;
        }
        srvproc_sleep_ms(POLL_MS);
    }
}

static int write_conf(const struct pgsrv *s)
{
    FILE *f = fopen(s->conf, "a");
    if (!f) {
        fail("cannot append to %s: %s", s->conf, strerror(errno));
        return -1;
    }
    fprintf(f,
            "\n# pgsrv\nport = %d\nlisten_addresses = '127.0.0.1'\n"
            "unix_socket_directories = '%s'\nfsync = off\nsynchronous_commit = off\n"
            "full_page_writes = off\nmax_connections = 200\nlog_min_messages = warning\n",
            s->port, s->dir);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fail("cannot write %s", s->conf);
        return -1;
    }
    return 0;
}

/* Replace the port line written by write_conf (the last "port =" wins). */
static int set_port(struct pgsrv *s, int port)
{
    s->port = port;
    FILE *f = fopen(s->conf, "a");
    if (!f) {
        fail("cannot append to %s: %s", s->conf, strerror(errno));
        return -1;
    }
    fprintf(f, "port = %d\n", port);
    return fclose(f) == 0 ? 0 : -1;
}

static int createdb(struct pgsrv *s, const char *name)
{
    char tool[PATH_MAX], port[16];
    if (srvproc_path_join(WHO, tool, s->bindir, "createdb") == -1)
        return -1;
    snprintf(port, sizeof port, "%d", s->port);
    char *argv[] = {tool, "-h", s->dir, "-p", port, "-U", "postgres", (char *)name, NULL};
    return srvproc_run_tool(WHO, &s->child, argv, s->tools_log);
}

int pgsrv_start(pgsrv **out)
{
    *out = NULL;
    struct pgsrv *s = calloc(1, sizeof *s);
    if (!s) {
        fail("out of memory");
        return -1;
    }
    if (find_bindir(s->bindir) == -1) {
        free(s);
        return -1;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            fail("running as root and there is no postgres user to run the server as");
            free(s);
            return -1;
        }
        s->child.drop = true;
        s->child.uid = pw->pw_uid;
        s->child.gid = pw->pw_gid;
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    /* The socket path must fit sun_path (107 bytes) with its file name. */
    int n = snprintf(s->dir, sizeof s->dir, "%s/pgsrv.XXXXXX", tmp);
    if (n < 0 || n > 70 || strchr(s->dir, '\'')) {
        fail("TMPDIR is too long for a unix socket path or holds a quote");
        free(s);
        return -1;
    }
    if (!mkdtemp(s->dir)) {
        fail("mkdtemp %s: %s", s->dir, strerror(errno));
        free(s);
        return -1;
    }
    s->child.cwd = s->dir;
    if (srvproc_path_join(WHO, s->data, s->dir, "data") == -1 ||
        srvproc_path_join(WHO, s->log, s->dir, "server.log") == -1 ||
        srvproc_path_join(WHO, s->tools_log, s->dir, "tools.log") == -1 ||
        srvproc_path_join(WHO, s->conf, s->data, "postgresql.conf") == -1 ||
        srvproc_path_join(WHO, s->pidfile, s->data, "postmaster.pid") == -1)
        goto error;
    if (s->child.drop && chown(s->dir, s->child.uid, s->child.gid) == -1) {
        fail("chown %s to postgres: %s", s->dir, strerror(errno));
        goto error;
    }
    char initdb[PATH_MAX];
    if (srvproc_path_join(WHO, initdb, s->bindir, "initdb") == -1)
        goto error;
    char *argv[] = {initdb,     "-D", s->data, "-A",          "trust",     "-U",
                    "postgres", "-E", "UTF8",  "--no-locale", "--no-sync", NULL};
    if (srvproc_run_tool(WHO, &s->child, argv, s->tools_log) == -1)
        goto error;
    int tries = 0;
    for (;;) {
        int port = free_port();
        if (port <= 0) {
            fail("no free port: %s", strerror(errno));
            goto error;
        }
        if ((tries == 0 ? (s->port = port, write_conf(s)) : set_port(s, port)) == -1)
            goto error;
        if (launch(s) == 0)
            break;
        /* Most likely someone took the port between our probe and the
         * server's bind; try another. */
        if (++tries == START_TRIES)
            goto error;
    }
    if (createdb(s, "mudbus") == -1)
        goto error;
    snprintf(s->url, sizeof s->url, "postgresql://postgres@127.0.0.1:%d/mudbus", s->port);
    *out = s;
    return 0;
error:
    fprintf(stderr, "pgsrv: start failed; directory was %s\n", s->dir);
    pgsrv_stop(s);
    return -1;
}

/* Send sig to the postmaster's children (its backends and auxiliary
 * processes), found by their parent pid in /proc/PID/stat. */
static void signal_children(const struct pgsrv *s, int sig)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* "pid (comm) state ppid ...": comm may hold spaces and ')' */
        const char *p = strrchr(buf, ')');
        char state;
        long ppid;
        if (p && sscanf(p + 1, " %c %ld", &state, &ppid) == 2 && ppid == (long)s->pid)
            kill((pid_t)strtol(de->d_name, NULL, 10), sig);
    }
    closedir(d);
}

int pgsrv_freeze(pgsrv *s)
{
    if (s->pid <= 0) {
        fail("freeze: the server is not running");
        return -1;
    }
    if (s->frozen)
        return 0;
    /* The postmaster first, so that it starts no new process meanwhile. */
    if (kill(s->pid, SIGSTOP) == -1) {
        fail("kill %ld: %s", (long)s->pid, strerror(errno));
        return -1;
    }
    s->frozen = true;
    signal_children(s, SIGSTOP);
    return 0;
}

int pgsrv_thaw(pgsrv *s)
{
    if (!s->frozen || s->pid <= 0)
        return 0;
    signal_children(s, SIGCONT);
    kill(s->pid, SIGCONT);
    s->frozen = false;
    return 0;
}

static int stop_server(struct pgsrv *s)
{
    if (s->pid <= 0)
        return 0;
    pgsrv_thaw(s);
    int status;
    if (srvproc_wait(s->pid, &status, WNOHANG) == s->pid) {
        char why[64];
        srvproc_describe_exit(status, why, sizeof why);
        fail("postgres %ld had already %s", (long)s->pid, why);
        srvproc_print_tail(WHO, s->log);
        s->pid = 0;
        return 0;
    }
    char pg_ctl[PATH_MAX];
    int rc = -1;
    if (srvproc_path_join(WHO, pg_ctl, s->bindir, "pg_ctl") == 0) {
        char *argv[] = {pg_ctl, "stop", "-D", s->data, "-m", "fast", "-w", "-t", "10", NULL};
        rc = srvproc_run_tool(WHO, &s->child, argv, s->tools_log);
    }
    if (rc == 0 && reap_within(s, STOP_TIMEOUT_MS))
        return 0;
    fail("pg_ctl stop did not stop postgres %ld: SIGKILL", (long)s->pid);
    kill_and_reap(s);
    return 0;
}

void pgsrv_stop(pgsrv *s)
{
    if (!s)
        return;
    stop_server(s);
    srvproc_remove_dir(WHO, s->dir);
    free(s);
}

const char *pgsrv_url(const pgsrv *s)
{
    return s->url;
}

int pgsrv_port(const pgsrv *s)
{
    return s->port;
}

int pgsrv_pid(const pgsrv *s)
{
    return (int)s->pid;
}

const char *pgsrv_dir(const pgsrv *s)
{
    return s->dir;
}

int pgsrv_createdb(pgsrv *s, const char *name, char *url, size_t size)
{
    size_t len = strlen(name);
    if (len == 0 || len > 63 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != len) {
        fail("bad database name \"%s\"", name);
        return -1;
    }
    if (createdb(s, name) == -1)
        return -1;
    int n = snprintf(url, size, "postgresql://postgres@127.0.0.1:%d/%s", s->port, name);
    if (n < 0 || (size_t)n >= size) {
        fail("url buffer too small");
        return -1;
    }
    return 0;
}

int pgsrv_stop_temporarily(pgsrv *s)
{
    return stop_server(s);
}

int pgsrv_restart(pgsrv *s)
{
    stop_server(s);
    if (launch(s) == -1) {
        fail("restart on port %d failed", s->port);
        return -1;
    }
    return 0;
}
