/* RTP load for bench/media_relay.py: N calls, each two streams of 50 packets/s
 * (caller and human) through a relay; reports loss and one-way added latency.
 * Usage: rtp_load SECONDS RELAY_HOST PORT_A1 PORT_B1 [PORT_A2 PORT_B2 ...]
 * Every packet carries its send time; a stream starts counting after 0.5 s so
 * that the relay's symmetric-RTP latching is not counted as loss. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 160
#define MAX_LAT_US 200000

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 5 || (argc - 3) % 2) {
        fprintf(stderr, "usage: rtp_load SECONDS HOST PORT_A PORT_B [...]\n");
        return 2;
    }
    double seconds = atof(argv[1]);
    int streams = argc - 3;
    int *fds = calloc(streams, sizeof(int));
    struct sockaddr_in *peers = calloc(streams, sizeof(struct sockaddr_in));
    uint16_t *seq = calloc(streams, sizeof(uint16_t));
    static uint32_t hist[MAX_LAT_US + 1];
    int epfd = epoll_create1(0);
    for (int i = 0; i < streams; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int size = 4 << 20;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        struct sockaddr_in local = {.sin_family = AF_INET};
        local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(fds[i], (struct sockaddr *)&local, sizeof local);
        peers[i].sin_family = AF_INET;
        peers[i].sin_port = htons(atoi(argv[3 + i]));
        inet_pton(AF_INET, argv[2], &peers[i].sin_addr);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev);
    }
    unsigned char packet[12 + PAYLOAD], buffer[2048];
    memset(packet, 0xff, sizeof packet);
    packet[0] = 0x80;
    packet[1] = 0;
    uint64_t start = now_ns(), counting_from = start + 500000000ull;
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    uint64_t sent = 0, received = 0;
    uint64_t *due = calloc(streams, sizeof(uint64_t));
    uint32_t *ticks = calloc(streams, sizeof(uint32_t));
    for (int i = 0; i < streams; i++)  /* spread the streams' phases over the 20 ms */
        due[i] = start + (uint64_t)i * 20000000ull / streams;
    struct epoll_event events[256];
    int cursor = 0;
    while (1) {
        uint64_t now = now_ns(), next_due = end + 200000000ull;
        /* The phases are spread in stream order and every stream has the same period,
         * so the streams fall due round-robin: a cursor finds the next one in O(1)
         * (a scan of every stream at each wake-up cost the generator more than sending). */
        while (now < end && due[cursor] <= now) {
            int i = cursor;
            uint32_t ts = htonl(ticks[i] * PAYLOAD), ssrc = htonl(0x5000 + i);
            uint16_t sq = htons(seq[i]++);
            memcpy(packet + 2, &sq, 2);
            memcpy(packet + 4, &ts, 4);
            memcpy(packet + 8, &ssrc, 4);
            uint64_t stamp = now_ns();
            memcpy(packet + 12, &stamp, 8);
            if (sendto(fds[i], packet, sizeof packet, 0, (struct sockaddr *)&peers[i],
                       sizeof peers[i]) > 0 && stamp >= counting_from)
                sent++;
            ticks[i]++;
            due[i] += 20000000ull;
            cursor = (cursor + 1) % streams;
        }
        if (now < end) next_due = due[cursor];
        if (now >= end + 200000000ull)
            break;
        now = now_ns();
        uint64_t wait_ns = now >= end ? 10000000ull : (next_due > now ? next_due - now : 0);
        struct timespec timeout = {(time_t)(wait_ns / 1000000000ull), (long)(wait_ns % 1000000000ull)};
        struct pollfd ready = {.fd = epfd, .events = POLLIN};
        ppoll(&ready, 1, &timeout, NULL);  /* ns-precise wait: no spinning, no late sends */
        int n = epoll_wait(epfd, events, 256, 0);
        for (int e = 0; e < n; e++) {
            int fd = fds[events[e].data.u32];
            ssize_t got;
            while ((got = recv(fd, buffer, sizeof buffer, 0)) > 0) {
                if (got < 20) continue;
                uint64_t stamp;
                memcpy(&stamp, buffer + 12, 8);
                if (stamp < counting_from) continue;
                uint64_t lat = (now_ns() - stamp) / 1000;
                hist[lat > MAX_LAT_US ? MAX_LAT_US : lat]++;
                received++;
            }
        }
    }
    uint64_t p50 = 0, p99 = 0, max = 0, acc = 0;
    for (int us = 0; us <= MAX_LAT_US; us++) {
        if (!hist[us]) continue;
        acc += hist[us];
        if (!p50 && acc * 2 >= received) p50 = us;
        if (!p99 && acc * 100 >= received * 99) p99 = us;
        max = us;
    }
    printf("{\"streams\": %d, \"sent\": %llu, \"received\": %llu, \"p50_us\": %llu, "
           "\"p99_us\": %llu, \"max_us\": %llu}\n", streams, (unsigned long long)sent,
           (unsigned long long)received, (unsigned long long)p50, (unsigned long long)p99,
           (unsigned long long)max);
    return 0;
}
