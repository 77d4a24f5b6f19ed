#include "atelier/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "atelier/log.h"

typedef struct item {
    struct item *next;
    at_pool_work_fn *work;
    at_pool_done_fn *done;
    void *arg;
} item_t;

struct at_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item_t *todo_head, *todo_tail; /* waiting for a thread */
    item_t *done_head, *done_tail; /* worked, waiting for the loop */
    int queued, queue_max, pending;
    int stopping;
    int nthreads;
    pthread_t *threads;
    int efd; /* wakes the loop when something is done */
    at_io_watch_t *watch;
};

static void push(item_t **head, item_t **tail, item_t *it)
{
    it->next = NULL;
    if (*tail)
        (*tail)->next = it;
    else
        *head = it;
    *tail = it;
}

static item_t *pop(item_t **head, item_t **tail)
{
    item_t *it = *head;
    if (it) {
        *head = it->next;
        if (!*head)
            *tail = NULL;
    }
    return it;
}

static void *thread_main(void *arg)
{
    at_pool_t *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->todo_head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        item_t *it = pop(&p->todo_head, &p->todo_tail);
        p->queued--;
        pthread_mutex_unlock(&p->mu);

        it->work(it->arg);

        pthread_mutex_lock(&p->mu);
        push(&p->done_head, &p->done_tail, it);
        pthread_mutex_unlock(&p->mu);
        uint64_t one = 1;
        if (write(p->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            at_error("event=pool_wake_failed errno=%d", errno);
    }
}

/* On the loop: run the done callbacks of finished work. */
static void on_done(int fd, int events, void *arg)
{
    (void)events;
    at_pool_t *p = arg;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        at_warn("event=pool_read_failed errno=%d", errno);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        item_t *it = pop(&p->done_head, &p->done_tail);
        pthread_mutex_unlock(&p->mu);
        if (!it)
            return;
        p->pending--;
        if (it->done)
            it->done(it->arg, 1);
        free(it);
    }
}

at_pool_t *at_pool_new(at_io_t *io, int threads, int queue_max)
{
    at_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->queue_max = queue_max;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->threads = calloc((size_t)threads, sizeof *p->threads);
    if (p->efd < 0 || !p->threads) {
        at_pool_free(p);
        return NULL;
    }
    p->watch = at_io_watch_new(io, p->efd, on_done, p);
    if (!p->watch) {
        at_pool_free(p);
        return NULL;
    }
    at_io_watch_set(p->watch, AT_IO_READ);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, thread_main, p) != 0) {
            at_error("event=pool_thread_failed index=%d", i);
            break;
        }
        p->nthreads++;
    }
    if (p->nthreads == 0) {
        at_pool_free(p);
        return NULL;
    }
    return p;
}

void at_pool_free(at_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* finished work gets its done; work never started is dropped with a
     * done call too, so callers free what they own */
    item_t *it;
    while ((it = pop(&p->done_head, &p->done_tail))) {
        if (it->done)
            it->done(it->arg, 1);
        free(it);
    }
    while ((it = pop(&p->todo_head, &p->todo_tail))) {
        if (it->done)
            it->done(it->arg, 0);
        free(it);
    }
    at_io_watch_free(p->watch);
    if (p->efd >= 0)
        close(p->efd);
    free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

at_err_t at_pool_submit(at_pool_t *p, at_pool_work_fn *work, at_pool_done_fn *done, void *arg)
{
    item_t *it = calloc(1, sizeof *it);
    if (!it)
        return AT_ENOMEM;
    it->work = work;
    it->done = done;
    it->arg = arg;
    pthread_mutex_lock(&p->mu);
    if (p->queued >= p->queue_max) {
        pthread_mutex_unlock(&p->mu);
        free(it);
        return AT_EBUSY;
    }
    push(&p->todo_head, &p->todo_tail, it);
    p->queued++;
    p->pending++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return AT_OK;
}

int at_pool_pending(const at_pool_t *p)
{
    return p->pending;
}
