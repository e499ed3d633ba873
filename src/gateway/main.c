/* SPDX-License-Identifier: MIT */
/*
 * mudbus-gateway: WebSocket delivery of mudbus chat and game events.
 * See docs/OPERATIONS.md and PROTOCOL.md sections 3 and 4.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>

#include "gw.h"

extern char **environ;

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* Up to the hard limit of open files: one per connection. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    gw_config cfg;
    int rc = gw_config_load(&cfg, argc, argv, environ);
    if (rc == 1) {
        gw_config_free(&cfg);
        return 0;
    }
    if (rc == 2) {
        gw_config_free(&cfg);
        return 2;
    }
    gw_fd_table_presize(cfg.max_connections); /* while there is one thread (listener.c) */
    rc = gw_server_run(&cfg);
    gw_config_free(&cfg);
    return rc;
}
