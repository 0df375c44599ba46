/* A control for bench/media_relay.py: the least a userspace relay can do per packet
 * (one recvfrom, one sendto, symmetric latching, no batching, no rewriting).
 * Comparing warmline's relay with it separates the relay's own cost from what
 * the machine (syscalls, the load generator sharing the cores) costs anyway.
 * Usage: control_forwarder CALLS PORT_START  (prints the ports as JSON) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int calls = atoi(argv[1]), base = atoi(argv[2]), n = 2 * calls;
    int *fd = calloc(n, sizeof(int)); struct sockaddr_in *peer = calloc(n, sizeof *peer); int *latched = calloc(n, sizeof(int));
    int ep = epoll_create1(0);
    printf("{\"ports\": [");
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(base + 2 * i)}; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd[i], (void *)&a, sizeof a)) { perror("bind"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i}; epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
        printf("%s%d", i ? ", " : "", base + 2 * i);
    }
    printf("]}\n"); fflush(stdout);
    struct epoll_event evs[256]; char buf[2048];
    for (;;) {
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int e = 0; e < k; e++) {
            int i = evs[e].data.u32; struct sockaddr_in from; socklen_t fl = sizeof from; ssize_t got;
            while ((got = recvfrom(fd[i], buf, sizeof buf, 0, (void *)&from, &fl)) > 0) {
                peer[i] = from; latched[i] = 1; int j = i ^ 1;
                if (latched[j]) sendto(fd[j], buf, got, 0, (void *)&peer[j], sizeof peer[j]);
                fl = sizeof from;
            }
        }
    }
}
