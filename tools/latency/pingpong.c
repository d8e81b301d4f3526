/*
 * pingpong: the machine's floor for a one-client TCP round trip over loopback, in C.
 *
 * A 14-byte request (the size of a Switchboard TIME request) goes to an epoll echo server
 * and back, one at a time; the client prints the p50/p90/p99 round trip.  docs/BENCHMARKS.md
 * compares `switchboard bench --mode time --clients 1 --window 1` with it: what no server,
 * in any language, can beat on the machine with the same pinning.
 *
 *   gcc -O2 -o pingpong tools/latency/pingpong.c
 *   taskset -c 0 ./pingpong server 47001 &
 *   taskset -c 1 ./pingpong client 47001 20000          # the client sleeps in epoll_wait
 *   taskset -c 1 ./pingpong client 47001 20000 spin     # the client polls without sleeping
 *
 * The server answers one client and exits when it disconnects.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST 14

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int wait_readable(int ep) {
    struct epoll_event ev;
    for (;;) {
        int n = epoll_wait(ep, &ev, 1, -1);
        if (n == 1) return 0;
        if (n < 0 && errno != EINTR) die("epoll_wait");
    }
}

static int serve(struct sockaddr_in *addr) {
    int one = 1, listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)addr, sizeof *addr) < 0) die("bind");
    if (listen(listener, 1) < 0) die("listen");
    int conn = accept(listener, NULL, NULL);
    if (conn < 0) die("accept");
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = conn};
    epoll_ctl(ep, EPOLL_CTL_ADD, conn, &ev);
    char buf[4096];
    for (;;) {
        wait_readable(ep);
        ssize_t n = read(conn, buf, sizeof buf);
        if (n <= 0) return 0;
        if (write(conn, buf, (size_t)n) != n) die("write");
    }
}

static int client(struct sockaddr_in *addr, long count, int spin) {
    int one = 1, conn = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(conn, (struct sockaddr *)addr, sizeof *addr) < 0) die("connect");
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = conn};
    epoll_ctl(ep, EPOLL_CTL_ADD, conn, &ev);
    double *lat = malloc((size_t)count * sizeof *lat);
    if (lat == NULL) die("malloc");
    char buf[4096] = {0};
    for (long i = 0; i < count; i++) {
        double start = now_us();
        if (write(conn, buf, REQUEST) != REQUEST) die("write");
        size_t got = 0;
        while (got < REQUEST) {  /* the whole answer, however the kernel splits it */
            if (!spin) wait_readable(ep);
            ssize_t n = recv(conn, buf, sizeof buf, spin ? MSG_DONTWAIT : 0);
            if (n > 0) got += (size_t)n;
            else if (n == 0) { fprintf(stderr, "server closed\n"); return 1; }
            else if (errno != EAGAIN && errno != EINTR) die("recv");
        }
        lat[i] = now_us() - start;
    }
    qsort(lat, (size_t)count, sizeof *lat, by_value);
    printf("%s client: %ld round trips, p50 %.1f us, p90 %.1f us, p99 %.1f us\n",
           spin ? "spinning" : "sleeping", count, lat[count / 2], lat[count * 9 / 10],
           lat[count * 99 / 100]);
    free(lat);
    close(conn);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
        fprintf(stderr, "usage: %s server PORT | client PORT [COUNT] [spin]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!strcmp(argv[1], "server")) return serve(&addr);
    long count = argc > 3 ? atol(argv[3]) : 20000;
    if (count < 100) count = 100;
    return client(&addr, count, argc > 4 && !strcmp(argv[4], "spin"));
}
