/* SPDX-License-Identifier: MIT */
/*
 * srvproc: process helpers the test servers share (the contract is
 * srvproc.h).
 *
 * A spawned child, before exec: drops to the given user when asked (first,
 * since a credential change clears the parent-death signal), sets
 * PR_SET_PDEATHSIG so the kernel SIGKILLs it when the thread that forked it
 * dies (a crashed or aborted test never leaves a server behind), takes stdin
 * from /dev/null and appends stdout and stderr to the log, closes every other
 * inherited descriptor (so it never holds a test's client sockets open),
 * changes directory when asked, and restores the default signal dispositions
 * and an empty mask. Between fork and exec it makes only async-signal-safe
 * calls; whatever needs formatting is prepared before fork.
 */
#include "srvproc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOG_TAIL_BYTES 4096

void srvproc_fail(const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", who);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

long long srvproc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void srvproc_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int srvproc_path_join(const char *who, char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX) {
        srvproc_fail(who, "path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

void srvproc_print_tail(const char *who, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[LOG_TAIL_BYTES + 1];
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > LOG_TAIL_BYTES)
            start = size - LOG_TAIL_BYTES;
    }
    fseek(f, start, SEEK_SET);
    size_t n = fread(buf, 1, LOG_TAIL_BYTES, f);
    fclose(f);
    buf[n] = '\0';
    fprintf(stderr, "%s: ---- tail of %s ----\n%s%s", who, path, buf,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
    fprintf(stderr, "%s: ---- end of %s ----\n", who, path);
}

/* Runs in the forked child: only async-signal-safe calls until exec. msg is
 * the line to write to the log if exec fails, len its length. */
static void child_exec(const srvproc_spawn_opts *o, char *const argv[], const char *log,
                       pid_t parent, const char *msg, size_t len)
{
    if (o->drop && (setgroups(0, NULL) == -1 || setgid(o->gid) == -1 || setuid(o->uid) == -1))
        _exit(125);
    /* After the credential change, which would clear it: SIGKILL this
     * process when the thread that forked it dies; if that happened already,
     * the signal will never come, so exit now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
        _exit(126);
    int in = open("/dev/null", O_RDONLY);
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in == -1 || out == -1 || dup2(in, 0) == -1 || dup2(out, 1) == -1 || dup2(out, 2) == -1)
        _exit(126);
    /* Do not inherit the test's sockets: a client connection held open by
     * the server process would never see its close. */
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == -1) {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
            close((int)fd);
    }
    if (o->cwd && chdir(o->cwd) == -1)
        _exit(126);
    /* The default signal dispositions and an empty mask, whatever the test
     * process had set (exec keeps ignored signals and the mask). */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    execv(argv[0], argv);
    ssize_t ignored = write(2, msg, len);
    (void)ignored;
    _exit(127);
}

pid_t srvproc_spawn(const char *who, const srvproc_spawn_opts *opts, char *const argv[],
                    const char *log)
{
    static const srvproc_spawn_opts none;
    const srvproc_spawn_opts *o = opts ? opts : &none;
    /* Formatted here, because the child may not call snprintf. */
    char msg[128];
    int len = snprintf(msg, sizeof msg, "%s: exec failed\n", who);
    if (len < 0)
        len = 0;
    else if ((size_t)len >= sizeof msg)
        len = (int)sizeof msg - 1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        srvproc_fail(who, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0)
        child_exec(o, argv, log, parent, msg, (size_t)len);
    return pid;
}

pid_t srvproc_wait(pid_t pid, int *status, int flags)
{
    pid_t r;
    do {
        r = waitpid(pid, status, flags);
    } while (r == -1 && errno == EINTR);
    return r;
}

void srvproc_describe_exit(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, size, "ended (wait status %d)", status);
}

int srvproc_run_tool(const char *who, const srvproc_spawn_opts *opts, char *const argv[],
                     const char *log)
{
    pid_t pid = srvproc_spawn(who, opts, argv, log);
    if (pid == -1)
        return -1;
    int status;
    if (srvproc_wait(pid, &status, 0) == -1) {
        srvproc_fail(who, "waitpid %s: %s", argv[0], strerror(errno));
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char why[64];
        srvproc_describe_exit(status, why, sizeof why);
        srvproc_fail(who, "%s %s %s", argv[0], argv[1] ? argv[1] : "", why);
        srvproc_print_tail(who, log);
        return -1;
    }
    return 0;
}

/* The prefix for remove_entry's messages: nftw passes its callback no
 * argument of ours. Per thread, as each server is used by one thread. */
static _Thread_local const char *remove_who;

/* nftw callback: remove one entry (children come first, FTW_DEPTH). */
static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) == -1 && errno != ENOENT)
        srvproc_fail(remove_who, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

void srvproc_remove_dir(const char *who, const char *dir)
{
    if (dir[0] == '\0')
        return;
    remove_who = who;
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    remove_who = NULL;
}
