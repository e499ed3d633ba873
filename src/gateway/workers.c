/* SPDX-License-Identifier: MIT */
/*
 * workers.c - a small pool of worker threads for blocking calls (NATS
 * requests, the mute store), so that the loop thread never blocks. Jobs go in
 * through a bounded FIFO; finished jobs come back through a second list and a
 * uv_async_t that runs their done callbacks on the loop.
 */
#include <pthread.h>
#include <stdlib.h>

#include "gw.h"

struct gw_work_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gw_work *head, *tail; /* queued */
    gw_work *done;        /* finished, newest first */
    size_t depth, max;
    bool stop;
    unsigned nthreads;
    pthread_t *threads;
    uv_async_t async;
};

static void *worker(void *arg)
{
    gw_work_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        gw_work *w = p->head;
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        w->run(w);
        pthread_mutex_lock(&p->mu);
        p->depth--;
        w->next = p->done;
        p->done = w;
        uv_async_send(&p->async);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void run_done(gw_work_pool *p)
{
    pthread_mutex_lock(&p->mu);
    gw_work *list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    /* Oldest first. */
    gw_work *rev = NULL;
    while (list) {
        gw_work *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        gw_work *n = rev->next;
        rev->done(rev);
        rev = n;
    }
}

static void on_async(uv_async_t *a)
{
    run_done(a->data);
}

gw_work_pool *gw_work_start(uv_loop_t *loop, unsigned threads, size_t queue_max)
{
    gw_work_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->threads = calloc(threads ? threads : 1, sizeof *p->threads);
    if (!p->threads || uv_async_init(loop, &p->async, on_async) != 0) {
        free(p->threads);
        free(p);
        return NULL;
    }
    p->async.data = p;
    p->max = queue_max;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (unsigned i = 0; i < (threads ? threads : 1); i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
            break;
        p->nthreads++;
    }
    if (!p->nthreads) {
        gw_work_stop(p);
        return NULL;
    }
    return p;
}

bool gw_work_submit(gw_work_pool *p, gw_work *w)
{
    pthread_mutex_lock(&p->mu);
    if (p->stop || p->depth >= p->max) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    w->cancelled = false;
    w->next = NULL;
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    p->depth++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return true;
}

size_t gw_work_depth(gw_work_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t d = p->depth;
    pthread_mutex_unlock(&p->mu);
    return d;
}

static void close_cb(uv_handle_t *h)
{
    gw_work_pool *p = h->data;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

void gw_work_stop(gw_work_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    run_done(p);
    gw_work *w = p->head;
    while (w) {
        gw_work *n = w->next;
        w->cancelled = true;
        w->done(w);
        w = n;
    }
    p->head = p->tail = NULL;
    uv_close((uv_handle_t *)&p->async, close_cb);
}
