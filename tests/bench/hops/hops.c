/*
 * What the Redis hop costs on the keystroke path (ARCHITECTURE.md: "measure
 * both before choosing"). Two round trips, timed per keystroke, same box:
 *
 *   redis   "gateway" XADD term:b:in -> "manager" (blocked in XREAD) wakes,
 *           pipelines XADD term:b:out + PUBLISH term:b -> "gateway"'s
 *           subscriber gets it. The path terminals take (minus the PTY).
 *   direct  "gateway" writes a byte on a TCP loopback connection (TCP_NODELAY)
 *           -> "manager" reads it and writes it back: the sanctioned
 *           alternative, a direct gateway-to-manager channel.
 *
 *   hops <redis unix socket> [n]     prints p50/p99/max of both, in microseconds
 */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *g_sock;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static redisContext *connect_redis(void)
{
    redisContext *c = redisConnectUnix(g_sock);
    if (!c || c->err) {
        fprintf(stderr, "hops: redis %s: %s\n", g_sock, c ? c->errstr : "no memory");
        exit(1);
    }
    return c;
}

/* The manager's side of the Redis path: echo every input entry. */
static void *redis_manager(void *arg)
{
    int n = *(int *)arg;
    redisContext *c = connect_redis();
    char last[64] = "$";
    for (int got = 0; got < n;) {
        redisReply *r = redisCommand(c, "XREAD BLOCK 0 STREAMS term:b:in %s", last);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "hops: XREAD failed\n");
            exit(1);
        }
        redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++, got++) {
            redisReply *e = entries->element[i];
            snprintf(last, sizeof last, "%s", e->element[0]->str);
            redisReply *fields = e->element[1];
            const char *d = fields->element[1]->str;
            redisAppendCommand(c, "XADD term:b:out MAXLEN ~ 4096 * t out d %s", d);
            redisAppendCommand(c, "PUBLISH term:b %s", d);
            for (int k = 0; k < 2; k++) {
                redisReply *x;
                if (redisGetReply(c, (void **)&x) != REDIS_OK)
                    exit(1);
                freeReplyObject(x);
            }
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp);
    printf("  %-7s n=%d p50 %6.1f us  p99 %6.1f us  max %7.1f us\n", name, n, t[n / 2],
           t[n * 99 / 100], t[n - 1]);
}

static double run_redis(int n, double *t)
{
    redisContext *cmd = connect_redis(), *sub = connect_redis();
    redisReply *r = redisCommand(cmd, "DEL term:b:in term:b:out");
    freeReplyObject(r);
    r = redisCommand(sub, "SUBSCRIBE term:b");
    freeReplyObject(r);
    pthread_t th;
    pthread_create(&th, NULL, redis_manager, &n);
    usleep(100000); /* the manager blocks in XREAD */
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        r = redisCommand(cmd, "XADD term:b:in MAXLEN ~ 1000 * t in d k");
        freeReplyObject(r);
        if (redisGetReply(sub, (void **)&r) != REDIS_OK)
            exit(1);
        freeReplyObject(r);
        t[i] = now_us() - t0;
    }
    pthread_join(th, NULL);
    redisFree(cmd);
    redisFree(sub);
    return 0;
}

static void *direct_manager(void *arg)
{
    int fd = *(int *)arg, n = *((int *)arg + 1);
    char b;
    for (int i = 0; i < n; i++)
        if (read(fd, &b, 1) != 1 || write(fd, &b, 1) != 1)
            exit(1);
    return NULL;
}

static void run_direct(int n, double *t)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0)
        exit(1);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0)
        exit(1);
    int s = accept(ls, NULL, NULL);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int args[2] = {s, n};
    pthread_t th;
    pthread_create(&th, NULL, direct_manager, args);
    char b = 'k';
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        if (write(c, &b, 1) != 1 || read(c, &b, 1) != 1)
            exit(1);
        t[i] = now_us() - t0;
    }
    pthread_join(th, NULL);
    close(c);
    close(s);
    close(ls);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: hops <redis unix socket> [n]\n");
        return 2;
    }
    g_sock = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 10000;
    double *t = calloc((size_t)n, sizeof *t);
    if (!t || n < 100)
        return 2;
    printf("keystroke round trip without the PTY, %d keystrokes, one at a time\n", n);
    run_redis(n, t);
    report("redis", t, n);
    double redis_p50 = t[n / 2], redis_p99 = t[n * 99 / 100];
    run_direct(n, t);
    report("direct", t, n);
    printf("  redis / direct: p50 %.1fx, p99 %.1fx\n", redis_p50 / t[n / 2],
           redis_p99 / t[n * 99 / 100]);
    free(t);
    return 0;
}
