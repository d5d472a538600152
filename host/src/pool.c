/* pool.c: the host's worker threads.
 *
 * One job runs at a time: its range is cut into chunks of `grain` items and
 * every thread (the caller included) takes the next chunk from a shared
 * counter. The chunks, and so every per-chunk result, depend only on n and
 * grain, never on the number of threads: that is what keeps results bitwise
 * identical across thread counts. A call made while the pool is busy (a
 * nested call from a kernel, or a second application thread) runs its chunks
 * on the calling thread instead of waiting. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"

struct lk__pool {
    int32_t threads;
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done;
    pthread_mutex_t busy; /* held by the caller whose job is running */
    uint64_t generation;
    int32_t stop;
    int32_t active; /* workers still inside the current job */
    /* the current job */
    lk_range_fn fn;
    void *arg;
    int64_t n, grain, chunks;
    atomic_llong next;
    int64_t first_failed; /* lowest failing chunk, or chunks */
    lk_status failure;
};

static void run_chunks(lk__pool *p)
{
    for (;;) {
        int64_t c = atomic_fetch_add(&p->next, 1);
        if (c >= p->chunks)
            return;
        int64_t begin = c * p->grain;
        int64_t end = begin + p->grain < p->n ? begin + p->grain : p->n;
        lk_status st = p->fn(p->arg, begin, end);
        if (st != LK_OK) {
            pthread_mutex_lock(&p->lock);
            if (c < p->first_failed) {
                p->first_failed = c;
                p->failure = st;
            }
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void *worker_main(void *arg)
{
    lk__pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        run_chunks(p);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

lk_status lk__pool_create(int32_t threads, lk__pool **out)
{
    *out = NULL;
    if (threads < 1)
        threads = 1;
    lk__pool *p = calloc(1, sizeof *p);
    if (!p)
        return LK_ERR_NOMEM;
    p->threads = threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->busy, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (threads > 1) {
        p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
        if (!p->workers) {
            lk__pool_destroy(p);
            return LK_ERR_NOMEM;
        }
        for (int32_t i = 0; i < threads - 1; i++) {
            if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
                p->threads = i + 1; /* the ones started, plus the caller */
                break;
            }
        }
    }
    *out = p;
    return LK_OK;
}

void lk__pool_destroy(lk__pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int32_t i = 0; p->workers && i < p->threads - 1; i++)
        pthread_join(p->workers[i], NULL);
    free(p->workers);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->busy);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int32_t lk__pool_threads(const lk__pool *p)
{
    return p->threads;
}

static lk_status run_serial(int64_t n, int64_t grain, lk_range_fn fn, void *arg)
{
    for (int64_t begin = 0; begin < n; begin += grain) {
        int64_t end = begin + grain < n ? begin + grain : n;
        lk_status st = fn(arg, begin, end);
        if (st != LK_OK)
            return st;
    }
    return LK_OK;
}

lk_status lk__pool_for(lk__pool *p, int64_t n, int64_t grain, lk_range_fn fn, void *arg)
{
    if (n <= 0)
        return LK_OK;
    if (grain < 1)
        grain = 1;
    int64_t chunks = (n - 1) / grain + 1;
    if (p->threads == 1 || chunks == 1 || pthread_mutex_trylock(&p->busy) != 0)
        return run_serial(n, grain, fn, arg);

    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->grain = grain;
    p->chunks = chunks;
    atomic_store(&p->next, 0);
    p->first_failed = chunks;
    p->failure = LK_OK;
    p->active = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_chunks(p);

    pthread_mutex_lock(&p->lock);
    while (p->active > 0)
        pthread_cond_wait(&p->done, &p->lock);
    lk_status st = p->failure;
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->busy);
    return st;
}
