/* RTP load for bench/media_relay.py: N calls, each two streams of 50 packets/s
 * (caller and human) through a relay; reports loss and one-way added latency.
 * Usage: rtp_load [-a PT:STEP:HEX -b PT:STEP:HEX] SECONDS RELAY_HOST PORT_A1 PORT_B1 [...]
 * Every packet carries its send time; a stream starts counting after 0.5 s so
 * that the relay's symmetric-RTP latching is not counted as loss.
 *
 * With -a/-b (a transcoding relay), the A streams (callers) and B streams (humans) send
 * those payloads (payload type, timestamp step, bytes in hex). A transcoded payload
 * cannot carry a send time, so the send time is found from the RTP timestamp instead:
 * every stream pauses 500 ms at the 0.5 s mark (its timestamps jump by the pause), and a
 * relay keeps timestamp differences (rescaled to the receiving side's clock). The first
 * packet a socket receives past the jump is its partner's first since the restart; any
 * later one is (timestamp - that one's) / step packets after it, whatever was lost or
 * arrived late from before the pause. A relay whose transcoder stamps its own
 * continuous timestamps (rtpengine) shows no jump: there the k-th packet received after
 * the partner restarted is taken as its k-th since (in order, as relays forward).
 * The first SETTLE packets of each stream after the pause are sent and placed but not
 * counted: rtpengine 10.5 transcoding into G.722 sends the first packet after a silence at
 * once and the next one a silence later (then the rest in a burst), which is how it
 * meets a pause, not what it does under load. */
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
#define PAUSE_NS 500000000ull
#define RING 64 /* send times kept per stream: 1.28 s of packets */
#define SETTLE 50 /* packets a stream sends after the pause before they count: 1 s */

typedef struct {
    int payload_type;
    uint32_t step;
    unsigned char payload[1400];
    size_t length;
} Side;

/* "PT:STEP:HEX" -> side; 0 if it parses. */
static int parse_side(const char *text, Side *side) {
    unsigned pt, step;
    int used = 0;
    if (sscanf(text, "%u:%u:%n", &pt, &step, &used) != 2 || pt > 127) return -1;
    const char *hex = text + used;
    size_t digits = strlen(hex);
    if (digits == 0 || digits % 2 || digits / 2 > sizeof side->payload) return -1;
    for (size_t i = 0; i < digits / 2; i++) {
        unsigned byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
        side->payload[i] = (unsigned char)byte;
    }
    side->payload_type = (int)pt;
    side->step = step;
    side->length = digits / 2;
    return 0;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* One packet of a side's payload; after the pause, its send time is kept by order. */
static void send_counted(int fd, const struct sockaddr_in *peer, const Side *side,
                         uint16_t sequence, uint32_t tick, int stream, uint64_t counting_from,
                         uint64_t *restarted, uint64_t *sent_at, uint32_t *sent_since,
                         uint64_t *sent) {
    unsigned char packet[12 + sizeof side->payload];
    packet[0] = 0x80;
    packet[1] = (unsigned char)side->payload_type;
    uint16_t sq = htons(sequence);
    uint32_t ts = htonl(tick * side->step), ssrc = htonl(0x5000 + (uint32_t)stream);
    memcpy(packet + 2, &sq, 2);
    memcpy(packet + 4, &ts, 4);
    memcpy(packet + 8, &ssrc, 4);
    memcpy(packet + 12, side->payload, side->length);
    uint64_t stamp = now_ns();
    if (sendto(fd, packet, 12 + side->length, 0, (const struct sockaddr *)peer, sizeof *peer)
        <= 0 || stamp < counting_from)
        return;
    if (!*restarted) *restarted = stamp;
    sent_at[*sent_since % RING] = stamp;
    *sent_since += 1;
    *sent += *sent_since > SETTLE;
}

int main(int argc, char **argv) {
    Side sides[2];
    int counted = 0; /* latency by order (transcoded payloads), see above */
    while (argc > 2 && (strcmp(argv[1], "-a") == 0 || strcmp(argv[1], "-b") == 0)) {
        if (parse_side(argv[2], &sides[argv[1][1] == 'b']) < 0) {
            fprintf(stderr, "rtp_load: %s wants PT:STEP:HEX\n", argv[1]);
            return 2;
        }
        counted |= argv[1][1] == 'a' ? 1 : 2;
        argc -= 2;
        argv += 2;
    }
    if (argc < 5 || (argc - 3) % 2 || (counted && counted != 3)) {
        fprintf(stderr, "usage: rtp_load [-a PT:STEP:HEX -b PT:STEP:HEX] SECONDS HOST "
                        "PORT_A PORT_B [...]\n");
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
    /* counted mode: each stream's send times since its restart, and what came back */
    uint64_t *restarted = calloc(streams, sizeof(uint64_t));
    uint64_t *sent_at = calloc((size_t)streams * RING, sizeof(uint64_t));
    uint32_t *sent_since = calloc(streams, sizeof(uint32_t));
    /* per receiving socket: the last timestamp before the jump, and the first after it */
    int *has_last = calloc(streams, sizeof(int)), *has_base = calloc(streams, sizeof(int));
    uint32_t *last_ts = calloc(streams, sizeof(uint32_t)), *base_ts = calloc(streams, 4);
    int *by_order = calloc(streams, sizeof(int)); /* no jump seen: count, don't read ts */
    uint32_t *heard = calloc(streams, sizeof(uint32_t));
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
            cursor = (cursor + 1) % streams;
            if (counted && due[i] >= counting_from && due[i] < counting_from + PAUSE_NS) {
                due[i] += PAUSE_NS; /* the pause: every stream skips the same ticks */
                ticks[i] += PAUSE_NS / 20000000ull;
                continue;
            }
            if (counted) {
                send_counted(fds[i], &peers[i], &sides[i % 2], seq[i]++, ticks[i], i,
                             counting_from, &restarted[i], &sent_at[(size_t)i * RING],
                             &sent_since[i], &sent);
            } else {
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
            }
            ticks[i]++;
            due[i] += 20000000ull;
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
            int j = (int)events[e].data.u32, fd = fds[j];
            ssize_t got;
            while ((got = recv(fd, buffer, sizeof buffer, 0)) > 0) {
                if (counted) {
                    int i = j ^ 1; /* the partner stream this leg's packets came from */
                    uint64_t arrival = now_ns();
                    if (got < 12 || (buffer[1] >= 192 && buffer[1] <= 223)) continue; /* RTCP */
                    uint32_t ts = (uint32_t)buffer[4] << 24 | (uint32_t)buffer[5] << 16 |
                                  (uint32_t)buffer[6] << 8 | buffer[7];
                    uint32_t step = sides[j % 2].step; /* this side's clock */
                    if (!has_base[j]) {
                        int jump = has_last[j] && ts - last_ts[j] >= 10 * step &&
                                   ts - last_ts[j] < 0x80000000u;
                        if (!restarted[i] || arrival < restarted[i]) {
                            has_last[j] = 1;
                            last_ts[j] = ts;
                            continue; /* from before the pause */
                        }
                        has_base[j] = 1;
                        base_ts[j] = ts;
                        by_order[j] = has_last[j] && !jump;
                    }
                    uint32_t since = ts - base_ts[j];
                    if (!by_order[j] && since >= 0x80000000u) continue; /* from before */
                    uint32_t k = by_order[j] ? heard[j]++ : since / step;
                    if (k >= sent_since[i]) continue; /* not sent (yet): not ours to time */
                    if (k < SETTLE) continue; /* placed, not counted (see above) */
                    uint64_t lat = MAX_LAT_US;
                    if (sent_since[i] - k <= RING)
                        lat = (arrival - sent_at[(size_t)i * RING + k % RING]) / 1000;
                    hist[lat > MAX_LAT_US ? MAX_LAT_US : lat]++;
                    received++;
                    continue;
                }
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
