/* SPDX-License-Identifier: MIT */
/*
 * natsrv: start and control a real nats-server for integration tests.
 *
 * Each server runs in a fresh temporary directory (config file, JetStream
 * store, logs, certificates), listens on 127.0.0.1 on a free port chosen by
 * the server itself (`-p -1 --ports_file_dir`), and is stopped and its
 * directory removed by natsrv_destroy, also when a test fails (register
 * natsrv_destroy in the test's teardown). A restarted server keeps its port
 * and its JetStream store, so clients reconnect to it.
 *
 * Threads: a natsrv is used by one test thread.
 */
#ifndef MUDBUS_TEST_NATSRV_H
#define MUDBUS_TEST_NATSRV_H

#include <stdbool.h>

typedef struct natsrv natsrv;

typedef struct natsrv_opts {
    bool jetstream;          /* enable JetStream with its store in the temp dir */
    bool tls;                /* generate a CA, a server certificate for 127.0.0.1 and
                              * localhost, and a client certificate; require TLS */
    bool tls_verify_clients; /* with tls: require a client certificate */
    const char *user;        /* with password: require user/password auth */
    const char *password;
    const char *token;      /* require this token */
    const char *extra_conf; /* appended verbatim to the generated config file */
    int max_payload;        /* bytes; 0: the server's default */
} natsrv_opts;

/* Start a server (opts may be NULL: plain, no JetStream) and wait until it
 * accepts connections (at most 10 s). Returns 0, or -1 after printing why to
 * stderr (nothing is left running then). */
int natsrv_start(const natsrv_opts *opts, natsrv **out);

/* Stop the server (SIGTERM, then SIGKILL after 5 s), remove its directory and
 * free. NULL does nothing. */
void natsrv_destroy(natsrv *s);

/* "nats://127.0.0.1:PORT" (or "tls://..." with tls). Valid until destroy. */
const char *natsrv_url(const natsrv *s);
int natsrv_port(const natsrv *s);
int natsrv_pid(const natsrv *s);
/* The temporary directory, and with tls the PEM files in it. */
const char *natsrv_dir(const natsrv *s);
const char *natsrv_ca_file(const natsrv *s);
const char *natsrv_client_cert_file(const natsrv *s);
const char *natsrv_client_key_file(const natsrv *s);

/* Stop the server (SIGTERM and wait) without removing anything. 0 or -1. */
int natsrv_stop(natsrv *s);
/* Start it again on the same port with the same store. 0 or -1. */
int natsrv_restart(natsrv *s);
/* SIGSTOP / SIGCONT: a frozen server keeps its sockets open but answers
 * nothing. 0 or -1. */
int natsrv_freeze(natsrv *s);
int natsrv_thaw(natsrv *s);

#endif
