/* SPDX-License-Identifier: MIT */
/*
 * timerq: a bounded queue of one-shot timers that its owner drives.
 *
 * libmudbus never sleeps between retry attempts: a failed operation is put on
 * a timer queue and the thread that drives the queue (a client's worker, or a
 * poll-mode caller's loop) runs it when it is due. The queue is a binary
 * min-heap on the due time with a hard capacity; adding to a full queue fails
 * with MB_EAGAIN (counted) and the caller decides (e.g. dead-letters the
 * message).
 *
 * Every timer's callback runs exactly once: with MB_TIMER_FIRED when it comes
 * due and is run, or with MB_TIMER_CANCELLED when it is cancelled or the queue
 * is destroyed with it pending. So a callback may own and free its argument.
 *
 * Threads: mb_timerq_add, mb_timerq_cancel, mb_timerq_timeout_ms,
 * mb_timerq_next_due and mb_timerq_size may be called from any thread;
 * mb_timerq_run from one thread at a time (the driver). Callbacks run on the
 * thread that runs or cancels them (or destroys the queue), never under the
 * queue's lock, so they may add timers. The optional wake function is called
 * (outside the lock) when an added timer became the earliest, so a driver
 * blocked in poll() can shorten its timeout.
 */
#ifndef MUDBUS_TIMERQ_H
#define MUDBUS_TIMERQ_H

#include <stddef.h>
#include <stdint.h>

#include "mudbus/clock.h"
#include "mudbus/metrics.h"
#include "mudbus/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_timerq mb_timerq;
typedef uint64_t mb_timer_id; /* never 0 */

typedef enum mb_timer_event { MB_TIMER_FIRED, MB_TIMER_CANCELLED } mb_timer_event;

typedef void (*mb_timer_fn)(void *arg, mb_timer_event ev);

typedef struct mb_timerq_opts {
    size_t capacity;              /* maximum pending timers; 0: default 65536 */
    const mb_clock *clock;        /* NULL: the system clock; copied, its ctx must
                                     outlive the queue */
    void (*wake)(void *wake_ctx); /* may be NULL */
    void *wake_ctx;
    mb_metrics *metrics; /* NULL: no metrics */
    const char *labels;  /* labels of its metrics; may be NULL */
} mb_timerq_opts;

/* Create a queue (opts may be NULL: defaults). Metrics, when given (the
 * registry must outlive the queue): mudbus_timerq_pending (gauge),
 * mudbus_timerq_fired_total, mudbus_timerq_full_total. MB_EINVAL for a NULL
 * out or a capacity above 2^24; MB_ENOMEM; a metrics error (e.g. MB_EEXIST for
 * a second queue with the same labels). On error no queue is created and the
 * registry is left as it was (metrics registered before the error are taken
 * back). Memory grows with use up to the capacity. */
mb_status mb_timerq_create(const mb_timerq_opts *opts, mb_timerq **out, mb_err *err);

/* Destroy the queue; pending timers' callbacks run with MB_TIMER_CANCELLED on
 * the calling thread, earliest first. NULL does nothing. No other thread may
 * use the queue; a callback that adds a timer then gets MB_ECLOSED. */
void mb_timerq_destroy(mb_timerq *q);

/* Schedule fn(arg) `delay_ns` from now (a due time past the clock's range
 * saturates). *id (may be NULL) receives its id. On error fn is not called
 * and nothing is kept: MB_EAGAIN when the queue is full (counted); MB_ENOMEM
 * when it cannot grow; MB_EINVAL for a NULL queue or fn; MB_ECLOSED from a
 * callback run by mb_timerq_destroy. Any thread. */
mb_status mb_timerq_add(mb_timerq *q, uint64_t delay_ns, mb_timer_fn fn, void *arg,
                        mb_timer_id *id);

/* Cancel a pending timer: its callback runs now, on this thread, with
 * MB_TIMER_CANCELLED. MB_ENOTFOUND if it has already run or been cancelled. */
mb_status mb_timerq_cancel(mb_timerq *q, mb_timer_id id);

/* Run up to `max` due timers (0: no limit) in due-time order (ties in the
 * order they were added). "Due" is judged against one clock reading taken at
 * the start; timers added while it runs (by its callbacks or by other threads)
 * wait for the next call, so a callback that re-adds itself cannot keep it
 * from returning. Returns how many ran. One driver thread at a time. */
size_t mb_timerq_run(mb_timerq *q, size_t max);

/* Milliseconds until the earliest timer is due, rounded up, for poll(): -1
 * when the queue is empty, 0 when one is due. */
int mb_timerq_timeout_ms(mb_timerq *q);

/* Monotonic time (the queue's clock, ns) at which the earliest timer is due;
 * UINT64_MAX when empty. */
uint64_t mb_timerq_next_due(mb_timerq *q);

/* Pending timers. */
size_t mb_timerq_size(mb_timerq *q);

#ifdef __cplusplus
}
#endif
#endif
