/* SPDX-License-Identifier: MIT */
/*
 * pgsrv: start and control a throw-away PostgreSQL server for tests.
 *
 * Each server gets a fresh temporary directory holding its data directory
 * (made by initdb: trust authentication, no locale, UTF8), its log and its
 * unix socket. It listens on 127.0.0.1 on a free port, runs with fsync off
 * (tests do not need durability), and has a database named "mudbus". The
 * binaries come from the newest /usr/lib/postgresql/<version>/bin (or
 * $PGSRV_BINDIR). Run as root, initdb and the server run as the `postgres`
 * user (PostgreSQL refuses to run as root), so the directory is owned by it.
 *
 * The server is a child process of the calling thread and is SIGKILLed by
 * the kernel if that thread dies, so a crashed test leaves no server behind;
 * pgsrv_stop stops it (pg_ctl stop -m fast, then SIGKILL after 10 s) and
 * removes the directory, also when a test failed (call it in teardown).
 *
 * Threads: a pgsrv is used by one thread, the one that started it (which
 * must outlive the server, as cmocka's main thread does).
 */
#ifndef MUDBUS_TEST_PGSRV_H
#define MUDBUS_TEST_PGSRV_H

#include <stddef.h>

typedef struct pgsrv pgsrv;

/* Make and start a server and create the database "mudbus"; wait until it
 * accepts connections (at most 30 s). Returns 0, or -1 after printing why to
 * stderr with the tail of the server's log (nothing is left running then). */
int pgsrv_start(pgsrv **out);

/* Stop the server, remove its directory and free. NULL does nothing. */
void pgsrv_stop(pgsrv *s);

/* "postgresql://postgres@127.0.0.1:PORT/mudbus", valid until pgsrv_stop. */
const char *pgsrv_url(const pgsrv *s);
int pgsrv_port(const pgsrv *s);
/* The postmaster's pid while it runs, else 0. */
int pgsrv_pid(const pgsrv *s);
const char *pgsrv_dir(const pgsrv *s);

/* Create another database (name: [a-z0-9_], 1..63 bytes) and write its URL
 * into url (size bytes). 0, or -1 after printing why. */
int pgsrv_createdb(pgsrv *s, const char *name, char *url, size_t size);

/* Stop the server (fast shutdown: open connections are closed) keeping its
 * data, for "database down" tests. Stopping a stopped server does nothing.
 * 0 or -1. */
int pgsrv_stop_temporarily(pgsrv *s);
/* Start it again on the same port with the same data. 0 or -1. */
int pgsrv_restart(pgsrv *s);

/* SIGSTOP the postmaster and all its processes: connections stay open but
 * nothing is answered, as with a hung host. Thaw with SIGCONT (stopping
 * thaws first). 0 or -1. */
int pgsrv_freeze(pgsrv *s);
int pgsrv_thaw(pgsrv *s);

#endif
