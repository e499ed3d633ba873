/* SPDX-License-Identifier: MIT */
/*
 * srvproc: process helpers the test servers share (natsrv.c, pgsrv.c):
 * messages with the caller's prefix, a monotonic clock, forking and exec'ing
 * a server or a tool with its output in a log file, reaping it, and removing
 * a server's temporary directory.
 *
 * Every function that prints takes who, the caller's name ("natsrv",
 * "pgsrv"); its messages go to stderr as "who: ...".
 *
 * Threads: the functions keep no shared state; a spawned child belongs to
 * the thread that spawned it (see srvproc_spawn).
 */
#ifndef MUDBUS_TEST_SRVPROC_H
#define MUDBUS_TEST_SRVPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* How srvproc_spawn sets up the child before exec. A NULL options pointer
 * means all zero: no credential change, no change of directory. */
typedef struct srvproc_spawn_opts {
    bool drop;       /* drop to uid and gid (setgroups, setgid, setuid) */
    uid_t uid;       /* with drop */
    gid_t gid;       /* with drop */
    const char *cwd; /* change to this directory; NULL: stay */
} srvproc_spawn_opts;

/* Print "who: " and the formatted message, and a newline, to stderr. */
void srvproc_fail(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Milliseconds on the monotonic clock. */
long long srvproc_now_ms(void);

/* Sleep ms milliseconds, also through signals. */
void srvproc_sleep_ms(long ms);

/* Join dir and name into out (PATH_MAX bytes). 0, or -1 after a message if
 * it does not fit. */
int srvproc_path_join(const char *who, char *out, const char *dir, const char *name);

/* Print the last 4 KiB of a log file to stderr (nothing if it cannot be
 * opened). */
void srvproc_print_tail(const char *who, const char *path);

/* Fork and exec argv[0] (an absolute path) with stdin from /dev/null and
 * stdout and stderr appended to log, set up as opts says. The child is
 * SIGKILLed by the kernel when the calling thread dies, so that thread must
 * outlive it. Returns the pid, or -1 after a message. */
pid_t srvproc_spawn(const char *who, const srvproc_spawn_opts *opts, char *const argv[],
                    const char *log);

/* waitpid that retries on EINTR. */
pid_t srvproc_wait(pid_t pid, int *status, int flags);

/* Describe a wait status for a message ("exited with status 1", ...). */
void srvproc_describe_exit(int status, char *buf, size_t size);

/* Run a short helper program to completion (srvproc_spawn, then reap). 0 if
 * it exited with 0; else -1 after a message and the tail of log. */
int srvproc_run_tool(const char *who, const srvproc_spawn_opts *opts, char *const argv[],
                     const char *log);

/* Remove dir and everything below it (symbolic links are not followed); a
 * failure to remove an entry is reported and the rest still removed. An
 * empty dir ("" : never created) does nothing. */
void srvproc_remove_dir(const char *who, const char *dir);

#endif
