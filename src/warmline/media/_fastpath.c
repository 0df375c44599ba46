/* The relay's fast path: RTP pass-through for bridged leg pairs, off the event loop.
 *
 * Why: a Python relay pays an interpreter round trip per packet and tops out
 * at a few hundred bridged calls per core. Once a call is plainly bridged
 * (two latched legs routed to each other, one codec or PCMU<->PCMA, nothing
 * listening in), nothing about a packet needs Python: this module's thread
 * reads both legs' sockets with epoll and recvmmsg, checks each packet as
 * relay.py would (version, length, CSRC/extension/padding, source address,
 * payload type), keeps the RFC 3550 reception statistics, re-stamps it on the
 * receiving leg's continuous outgoing stream (the same arithmetic as
 * rtp.ContinuousStream) and sends it with sendmmsg.
 *
 * A pair on two codecs the thread can run (G.711 either law, G.722, and Opus
 * when libopus loads) is transcoded here too: the far end's payload is decoded
 * to 8 kHz linear audio and encoded for the other leg, timestamps are rescaled
 * between RTP clocks and telephone-event durations between event clocks, as
 * relay_leg.py does; so an Opus, G.722 or G.711 bridge costs the event loop
 * nothing. Opus runs at 8 kHz inside libopus, as codecs.py runs it (no
 * resampling); libopus is opened with dlopen, so a machine without it still
 * builds and simply keeps Opus pairs in Python. G.722 is compiled in
 * (g722_adpcm.h) at the 8 kHz interface codecs.py uses, byte for byte the
 * `G722` package's output; its RTP clock is 8000 like G.711's, so its
 * timestamps need no rescaling. A codec's state starts afresh when a pair
 * comes here or goes back (a few ms of a decoder's warm-up).
 *
 * Looped audio (hold music, ringback) on a G.711 leg plays here too: play()
 * hands over the leg's outgoing stream with the loop's frames, encoded once
 * by Python and shared by every leg playing them, and a 20 ms timerfd sends
 * the next frame to every playing leg, re-stamped as relay_leg.PlayerFeed
 * would; stop_playing() hands the position and the stream back. Python keeps
 * reading the leg's socket meanwhile: only the sending moves.
 *
 * Python hands a pair over with bridge() and takes it back with release()
 * whenever anything needs the slow path (a switch, a player, DTMF, hold, a
 * re-INVITE, hang-up). Both directions carry their full state across, so the
 * far ends see no discontinuity either way. The thread never touches a Python
 * object; a mutex guards the tables, taken by Python with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "g722_adpcm.h"

#define MAX_RTP 1500
#define TICK_NS 20000000L       /* a frame of looped audio */
#define MAX_CATCH_UP 3          /* frames sent at once after a late tick */
#define TIMER_TOKEN UINT64_MAX  /* the epoll tag of the playing legs' timer */
#define BATCH 16
#define TRANSLATE_NONE 0
#define TRANSLATE_ULAW_TO_ALAW 1
#define TRANSLATE_ALAW_TO_ULAW 2
#define TRANSLATE_TRANSCODE 3 /* decode the peer's codec, encode this leg's */

/* The codecs a leg can be transcoded to or from (fastpath.py's _CODEC_IDS). */
#define CODEC_OTHER 0
#define CODEC_PCMU 1
#define CODEC_PCMA 2
#define CODEC_OPUS 3
#define CODEC_G722 4
#define CODEC_COUNT 5

#define OPUS_RATE 8000
#define OPUS_APPLICATION_VOIP 2048
#define OPUS_SET_COMPLEXITY_REQUEST 4010
#define OPUS_COMPLEXITY 5 /* as codecs.py: half the time of 10, no audible loss */
#define OPUS_FRAME 160    /* 20 ms at 8 kHz: what a frame of another length is cut to */
#define OPUS_MAX_FRAME 960 /* 120 ms, the longest frame a far end may send */
#define MAX_SAMPLES MAX_RTP /* a G.711 payload of a full datagram */

typedef struct {
    /* reception (RFC 3550 A.1/A.8), as rtcp.ReceptionStats */
    int has_base;
    long long base, max, cycles, received;
    int has_transit;
    double transit, jitter;
    long long expected_prior, received_prior;
} Reception;

typedef struct {
    /* the outgoing stream to this leg's far end, as rtp.ContinuousStream */
    uint32_t ssrc;
    uint32_t next_sequence;
    int has_last_timestamp;
    uint32_t last_timestamp;
    double last_wallclock;
    uint32_t first_timestamp;
    int has_source;
    uint32_t source;
    uint32_t sequence_offset;
    uint32_t source_base, target_base;
    long long switches;
} Outgoing;

typedef struct {
    long long received, sent, malformed, unknown_payload, wrong_source, rtcp, sent_octets;
} Counters;

typedef struct {
    int used;
    uint32_t generation;
    int fd;
    int peer;
    struct sockaddr_storage remote;
    socklen_t remote_len;
    int payload_type, dtmf_payload_type; /* accepted from the far end */
    int clock_rate;
    int translate; /* applied to audio from the peer before it is sent here */
    int codec;     /* CODEC_*, for transcoding */
    int dtmf_clock_rate; /* telephone-event's clock, 0 without it */
    void *decoder; /* the codec's state for audio from this far end (Opus, G.722), or NULL */
    void *encoder; /* ... and for audio sent to it */
    Reception reception;
    Outgoing outgoing;
    Counters counters;
    /* a playing leg (peer -1): the loop's frames and the synthetic source it plays as */
    int playing;
    PyObject *frames_object; /* the bytes, referenced while it plays */
    const unsigned char *frames;
    Py_ssize_t frame_length, frame_count, position;
    uint32_t source_ssrc, source_sequence, source_timestamp, source_step;
} Leg;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_t thread;
    int thread_started;
    volatile int stopping;
    int epoll_fd;
    int timer_fd;   /* ticks every 20 ms while a leg plays */
    int capacity;
    Leg *legs;
    int *players;   /* the slots that play, in no order */
    int player_count;
} Forwarder;

static unsigned char ulaw_to_alaw[256], alaw_to_ulaw[256];
/* g711.py's tables, copied at import so both paths give the same bytes */
static int16_t linear_from_ulaw[256], linear_from_alaw[256];
static unsigned char ulaw_from_linear[65536], alaw_from_linear[65536];

/* libopus, opened at import if the machine has it */
typedef struct {
    void *(*encoder_create)(int32_t rate, int channels, int application, int *error);
    int32_t (*encode)(void *encoder, const int16_t *pcm, int frame_size, unsigned char *data,
                      int32_t max_bytes);
    int (*encoder_ctl)(void *encoder, int request, ...);
    void (*encoder_destroy)(void *encoder);
    void *(*decoder_create)(int32_t rate, int channels, int *error);
    int (*decode)(void *decoder, const unsigned char *data, int32_t length, int16_t *pcm,
                  int frame_size, int decode_fec);
    void (*decoder_destroy)(void *decoder);
} OpusApi;
static OpusApi opus;
static int opus_loaded;

static double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- codecs ---------------------------------------------------------- */

static int load_opus(void) {
    void *library = dlopen("libopus.so.0", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) return 0;
    void **slots[] = {(void **)&opus.encoder_create, (void **)&opus.encode,
                      (void **)&opus.encoder_ctl, (void **)&opus.encoder_destroy,
                      (void **)&opus.decoder_create, (void **)&opus.decode,
                      (void **)&opus.decoder_destroy};
    const char *names[] = {"opus_encoder_create", "opus_encode", "opus_encoder_ctl",
                           "opus_encoder_destroy", "opus_decoder_create", "opus_decode",
                           "opus_decoder_destroy"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *slots[i] = dlsym(library, names[i]);
        if (*slots[i] == NULL) {
            dlclose(library);
            return 0;
        }
    }
    return 1;
}

static int codec_supported(int codec) {
    return codec == CODEC_PCMU || codec == CODEC_PCMA || codec == CODEC_G722 ||
           (codec == CODEC_OPUS && opus_loaded);
}

/* G.722's two states, fresh; 0, or -1 with neither left allocated. */
static int open_g722(Leg *leg) {
    G722Decoder *decoder = malloc(sizeof *decoder);
    G722Encoder *encoder = malloc(sizeof *encoder);
    if (decoder == NULL || encoder == NULL) {
        free(decoder);
        free(encoder);
        return -1;
    }
    g722_decoder_reset(decoder);
    g722_encoder_reset(encoder);
    leg->decoder = decoder;
    leg->encoder = encoder;
    return 0;
}

/* The decoder (for what the far end sends) and encoder (for what it is sent) a leg's
 * codec needs; G.711 needs none. 0, or -1 with nothing left allocated. */
static int open_codec(Leg *leg) {
    leg->decoder = leg->encoder = NULL;
    if (leg->codec == CODEC_G722) return open_g722(leg);
    if (leg->codec != CODEC_OPUS) return 0;
    int error = 0;
    leg->decoder = opus.decoder_create(OPUS_RATE, 1, &error);
    if (leg->decoder == NULL || error != 0) goto failed;
    leg->encoder = opus.encoder_create(OPUS_RATE, 1, OPUS_APPLICATION_VOIP, &error);
    if (leg->encoder == NULL || error != 0) goto failed;
    opus.encoder_ctl(leg->encoder, OPUS_SET_COMPLEXITY_REQUEST, OPUS_COMPLEXITY);
    return 0;
failed:
    if (leg->decoder != NULL) opus.decoder_destroy(leg->decoder);
    if (leg->encoder != NULL) opus.encoder_destroy(leg->encoder);
    leg->decoder = leg->encoder = NULL;
    return -1;
}

static void close_codec(Leg *leg) {
    if (leg->codec == CODEC_OPUS) {
        if (leg->decoder != NULL) opus.decoder_destroy(leg->decoder);
        if (leg->encoder != NULL) opus.encoder_destroy(leg->encoder);
    } else if (leg->codec == CODEC_G722) {
        free(leg->decoder);
        free(leg->encoder);
    }
    leg->decoder = leg->encoder = NULL;
}

/* 8 kHz linear samples from `leg`'s far end's payload; the count, or -1 if it is not audio
 * of the codec (an Opus packet libopus refuses). */
static int decode_audio(Leg *leg, const unsigned char *payload, size_t length, int16_t *pcm) {
    if (leg->codec == CODEC_OPUS) {
        if (length == 0) return -1; /* libopus would conceal a lost packet: 120 ms of nothing */
        return opus.decode(leg->decoder, payload, (int32_t)length, pcm, OPUS_MAX_FRAME, 0);
    }
    if (leg->codec == CODEC_G722) { /* an octet a sample at the 8 kHz interface */
        g722_decode(leg->decoder, payload, length, pcm);
        return (int)length;
    }
    const int16_t *table = leg->codec == CODEC_PCMU ? linear_from_ulaw : linear_from_alaw;
    for (size_t i = 0; i < length; i++) pcm[i] = table[payload[i]];
    return (int)length;
}

static int opus_frame_size(int samples) {
    static const int allowed[] = {20, 40, 80, 160, 320, 480}; /* 2.5 to 60 ms at 8 kHz */
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (samples == allowed[i]) return samples;
    return OPUS_FRAME;
}

/* `samples` encoded for `leg`'s far end into `out` (at most `room` bytes): the length, or
 * -1. A count Opus cannot frame is cut or padded to 20 ms, as codecs.py does; one it can
 * (2.5 to 60 ms) keeps its length. */
static int encode_audio(Leg *leg, int16_t *pcm, int samples, unsigned char *out, size_t room) {
    if (leg->codec == CODEC_OPUS) {
        int frame = opus_frame_size(samples);
        for (int i = samples; i < frame; i++) pcm[i] = 0;
        int32_t written = opus.encode(leg->encoder, pcm, frame, out, (int32_t)room);
        return written > 0 ? (int)written : -1;
    }
    if ((size_t)samples > room) return -1;
    if (leg->codec == CODEC_G722) {
        g722_encode(leg->encoder, pcm, (size_t)samples, out);
        return samples;
    }
    const unsigned char *table = leg->codec == CODEC_PCMU ? ulaw_from_linear : alaw_from_linear;
    for (int i = 0; i < samples; i++) out[i] = table[(uint16_t)pcm[i] ^ 0x8000];
    return samples;
}

/* Replaces the payload data[start:end] from `from`'s codec by `to`'s; the new end or -1. */
static long transcode(Leg *from, Leg *to, unsigned char *data, size_t start, size_t end) {
    static __thread int16_t pcm[MAX_SAMPLES];
    static __thread unsigned char encoded[MAX_RTP];
    int samples = decode_audio(from, data + start, end - start, pcm);
    if (samples < 0) return -1;
    int written = encode_audio(to, pcm, samples, encoded, MAX_RTP - start);
    if (written < 0) return -1;
    memcpy(data + start, encoded, (size_t)written);
    data[0] &= (unsigned char)~0x20; /* any padding went with the old payload */
    return (long)(start + (size_t)written);
}

/* An RFC 4733 event's duration (payload bytes 2-3) recounted on the target's event clock. */
static void rescale_event(unsigned char *payload, size_t length, int source_rate,
                          int target_rate) {
    if (length < 4 || source_rate <= 0 || target_rate <= 0 || source_rate == target_rate)
        return;
    long long duration = ((long long)payload[2] << 8 | payload[3]) * target_rate / source_rate;
    if (duration > 0xFFFF) duration = 0xFFFF;
    payload[2] = (unsigned char)(duration >> 8);
    payload[3] = (unsigned char)(duration & 0xFF);
}

/* ---- per packet ------------------------------------------------------ */

static int same_address(const struct sockaddr_storage *a, socklen_t a_len,
                        const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    (void)a_len;
    return 0;
}

/* Offset and end of the payload, or -1 for a packet relay.py would call malformed. */
static int payload_bounds(const unsigned char *data, size_t length, size_t *start, size_t *end) {
    if (length < 12 || length > MAX_RTP || data[0] >> 6 != 2) return -1;
    size_t offset = 12 + 4 * (size_t)(data[0] & 0x0F);
    if (offset > length) return -1;
    if (data[0] & 0x10) {
        if (offset + 4 > length) return -1;
        size_t words = (size_t)data[offset + 2] << 8 | data[offset + 3];
        offset += 4 + 4 * words;
        if (offset > length) return -1;
    }
    size_t stop = length;
    if (data[0] & 0x20) {
        unsigned padding = data[length - 1];
        if (padding == 0 || offset + padding > stop) return -1;
        stop -= padding;
    }
    *start = offset;
    *end = stop;
    return 0;
}

static void update_reception(Reception *r, uint32_t sequence, uint32_t timestamp,
                             double arrival, int clock_rate) {
    long long seq = sequence;
    if (!r->has_base) {
        r->has_base = 1;
        r->base = r->max = seq;
    } else if (seq < r->max && r->max - seq > 0x8000) {
        r->cycles += 1 << 16;
        r->max = seq;
    } else if (seq > r->max && seq - r->max < 0x8000) {
        r->max = seq;
    }
    r->received += 1;
    double transit = arrival * clock_rate - (double)timestamp;
    if (r->has_transit) r->jitter += (fabs(transit - r->transit) - r->jitter) / 16;
    r->has_transit = 1;
    r->transit = transit;
}

/* Floor division, as Python's //, for a negative elapsed time across a switch. */
static long long floor_divide(long long numerator, long long denominator) {
    long long quotient = numerator / denominator;
    return quotient * denominator > numerator ? quotient - 1 : quotient;
}

/* Re-stamps a packet on `o`; `source_rate` is the RTP clock it came with (rescaled to
 * `clock_rate`, as ContinuousStream.rewrite does for G.711 into an Opus leg). */
static void restamp(Outgoing *o, int clock_rate, int source_rate, unsigned char *data,
                    double now) {
    uint32_t sequence = (uint32_t)data[2] << 8 | data[3];
    uint32_t timestamp = (uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 |
                         (uint32_t)data[6] << 8 | data[7];
    uint32_t ssrc = (uint32_t)data[8] << 24 | (uint32_t)data[9] << 16 |
                    (uint32_t)data[10] << 8 | data[11];
    if (!o->has_source || ssrc != o->source) {
        if (o->has_source) o->switches += 1;
        o->has_source = 1;
        o->source = ssrc;
        o->sequence_offset = (o->next_sequence - sequence) & 0xFFFF;
        uint32_t target = o->first_timestamp;
        if (o->has_last_timestamp) {
            double elapsed = now - o->last_wallclock;
            long long step = llround((elapsed > 0 ? elapsed : 0) * clock_rate);
            target = o->last_timestamp + (uint32_t)(step < 1 ? 1 : step);
        }
        o->source_base = timestamp;
        o->target_base = target;
        data[1] |= 0x80; /* marker: a new talkspurt for the far end's jitter buffer */
    }
    uint32_t out_sequence = (sequence + o->sequence_offset) & 0xFFFF;
    long long elapsed = (int32_t)(timestamp - o->source_base);
    if (source_rate > 0 && source_rate != clock_rate)
        elapsed = floor_divide(elapsed * clock_rate, source_rate);
    uint32_t out_timestamp = o->target_base + (uint32_t)elapsed;
    o->next_sequence = (out_sequence + 1) & 0xFFFF;
    o->last_timestamp = out_timestamp;
    o->has_last_timestamp = 1;
    o->last_wallclock = now;
    data[2] = out_sequence >> 8;
    data[3] = out_sequence & 0xFF;
    for (int i = 0; i < 4; i++) {
        data[4 + i] = out_timestamp >> (24 - 8 * i) & 0xFF;
        data[8 + i] = o->ssrc >> (24 - 8 * i) & 0xFF;
    }
}

/* Checks one packet from `from`'s far end and readies it for `to`: the length to send,
 * or -1 to drop it. */
static long forward_one(Leg *from, Leg *to, unsigned char *data, size_t length,
                        const struct sockaddr_storage *source, socklen_t source_len,
                        double now) {
    if (length >= 2 && data[1] >= 192 && data[1] <= 223) {
        from->counters.rtcp += 1;
        return -1;
    }
    size_t start, end;
    if (payload_bounds(data, length, &start, &end) < 0) {
        from->counters.malformed += 1;
        return -1;
    }
    if (!same_address(&from->remote, source_len, source)) {
        from->counters.wrong_source += 1;
        return -1;
    }
    int payload_type = data[1] & 0x7F;
    int out_type;
    long out_length = (long)length;
    int transcoding = 0;
    if (payload_type == from->payload_type) {
        out_type = to->payload_type;
        if (to->translate == TRANSLATE_TRANSCODE) {
            transcoding = 1; /* once counted and timed, as relay_leg.py does */
        } else {
            const unsigned char *table = to->translate == TRANSLATE_ULAW_TO_ALAW ? ulaw_to_alaw
                                       : to->translate == TRANSLATE_ALAW_TO_ULAW ? alaw_to_ulaw
                                       : NULL;
            if (table != NULL)
                for (size_t i = start; i < end; i++) data[i] = table[data[i]];
        }
    } else if (from->dtmf_payload_type >= 0 && payload_type == from->dtmf_payload_type) {
        out_type = to->dtmf_payload_type;
        if (out_type >= 0)
            rescale_event(data + start, end - start, from->dtmf_clock_rate, to->dtmf_clock_rate);
    } else {
        from->counters.unknown_payload += 1;
        return -1;
    }
    from->counters.received += 1;
    uint32_t sequence = (uint32_t)data[2] << 8 | data[3];
    uint32_t timestamp = (uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 |
                         (uint32_t)data[6] << 8 | data[7];
    update_reception(&from->reception, sequence, timestamp, now, from->clock_rate);
    if (out_type < 0) return -1; /* DTMF to a far end that took no telephone-event */
    if (transcoding) {
        out_length = transcode(from, to, data, start, end);
        if (out_length < 0) {
            from->counters.malformed += 1; /* received, but not audio of its codec */
            return -1;
        }
    }
    data[1] = (data[1] & 0x80) | (unsigned char)out_type;
    restamp(&to->outgoing, to->clock_rate, from->clock_rate, data, now);
    return out_length;
}

static void drain(Forwarder *self, Leg *from) {
    Leg *to = &self->legs[from->peer];
    static __thread unsigned char buffers[BATCH][MAX_RTP + 1];
    static __thread struct sockaddr_storage sources[BATCH];
    struct mmsghdr in[BATCH], out[BATCH];
    struct iovec in_vec[BATCH], out_vec[BATCH];
    memset(in, 0, sizeof in);
    for (int i = 0; i < BATCH; i++) {
        in_vec[i].iov_base = buffers[i];
        in_vec[i].iov_len = MAX_RTP + 1; /* one more, to see an oversized packet */
        in[i].msg_hdr.msg_iov = &in_vec[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &sources[i];
        in[i].msg_hdr.msg_namelen = sizeof sources[i];
    }
    int got = recvmmsg(from->fd, in, BATCH, MSG_DONTWAIT, NULL);
    if (got <= 0) return;
    double now = monotonic_seconds();
    int ready = 0;
    for (int i = 0; i < got; i++) {
        long length = forward_one(from, to, buffers[i], in[i].msg_len, &sources[i],
                                  in[i].msg_hdr.msg_namelen, now);
        if (length < 0) continue;
        memset(&out[ready], 0, sizeof out[ready]);
        out_vec[ready].iov_base = buffers[i];
        out_vec[ready].iov_len = (size_t)length;
        out[ready].msg_hdr.msg_iov = &out_vec[ready];
        out[ready].msg_hdr.msg_iovlen = 1;
        out[ready].msg_hdr.msg_name = &to->remote;
        out[ready].msg_hdr.msg_namelen = to->remote_len;
        ready++;
    }
    if (ready == 0) return;
    int sent = sendmmsg(to->fd, out, ready, MSG_DONTWAIT);
    for (int i = 0; i < sent; i++) {
        to->counters.sent += 1;
        to->counters.sent_octets += (long long)out_vec[i].iov_len - 12; /* for RTCP SRs */
    }
}

/* The next frame of a playing leg's loop, as PlayerFeed._tick -> RelayLeg.send_from. */
static void play_frame(Leg *leg, double now) {
    unsigned char packet[12 + MAX_RTP];
    packet[0] = 0x80;
    packet[1] = (unsigned char)leg->payload_type;
    packet[2] = leg->source_sequence >> 8 & 0xFF;
    packet[3] = leg->source_sequence & 0xFF;
    for (int i = 0; i < 4; i++) {
        packet[4 + i] = leg->source_timestamp >> (24 - 8 * i) & 0xFF;
        packet[8 + i] = leg->source_ssrc >> (24 - 8 * i) & 0xFF;
    }
    leg->source_sequence = (leg->source_sequence + 1) & 0xFFFF;
    leg->source_timestamp += leg->source_step;
    memcpy(packet + 12, leg->frames + leg->position * leg->frame_length,
           (size_t)leg->frame_length);
    leg->position = (leg->position + 1) % leg->frame_count;
    restamp(&leg->outgoing, leg->clock_rate, leg->clock_rate, packet, now);
    if (sendto(leg->fd, packet, 12 + (size_t)leg->frame_length, MSG_DONTWAIT,
               (const struct sockaddr *)&leg->remote, leg->remote_len) > 0) {
        leg->counters.sent += 1;
        leg->counters.sent_octets += leg->frame_length;
    } /* else dropped, as a full socket buffer or an unreachable port drops it in Python */
}

/* One tick (or a few, late) of every playing leg; the lock is taken per leg, so Python
 * never waits for a whole queue on hold. A leg that stops meanwhile may miss this tick. */
static void play_due(Forwarder *self) {
    uint64_t expirations = 0;
    if (read(self->timer_fd, &expirations, sizeof expirations) != sizeof expirations) return;
    if (expirations > MAX_CATCH_UP) expirations = MAX_CATCH_UP;
    double now = monotonic_seconds();
    for (int p = 0;; p++) {
        pthread_mutex_lock(&self->lock);
        int more = p < self->player_count;
        if (more)
            for (uint64_t tick = 0; tick < expirations; tick++)
                play_frame(&self->legs[self->players[p]], now);
        pthread_mutex_unlock(&self->lock);
        if (!more) return;
    }
}

static void *run(void *arg) {
    Forwarder *self = arg;
    struct epoll_event events[64];
    while (!self->stopping) {
        int count = epoll_wait(self->epoll_fd, events, 64, 100);
        /* the lock per event, not per batch: Python's calls (counters for every RTCP
         * report) wait for one leg's packets at most, not a batch of transcoding */
        for (int e = 0; e < count; e++) {
            if (events[e].data.u64 == TIMER_TOKEN) {
                play_due(self);
                continue;
            }
            uint32_t slot = (uint32_t)events[e].data.u64;
            uint32_t generation = (uint32_t)(events[e].data.u64 >> 32);
            if ((int)slot >= self->capacity) continue;
            pthread_mutex_lock(&self->lock);
            Leg *leg = &self->legs[slot];
            if (leg->used && !leg->playing && leg->generation == generation) drain(self, leg);
            pthread_mutex_unlock(&self->lock);
        }
    }
    return NULL;
}

/* ---- state in and out of Python ------------------------------------- */

static int read_leg(PyObject *spec, Leg *leg) {
    const char *host;
    int family, port;
    PyObject *reception, *outgoing;
    if (!PyArg_ParseTuple(spec, "iisiiiiiiiOO", &leg->fd, &family, &host, &port,
                          &leg->payload_type, &leg->dtmf_payload_type, &leg->clock_rate,
                          &leg->translate, &leg->codec, &leg->dtmf_clock_rate, &reception,
                          &outgoing))
        return -1;
    Reception *r = &leg->reception;
    if (!PyArg_ParseTuple(reception, "pLLLLpddLL", &r->has_base, &r->base, &r->max, &r->cycles,
                          &r->received, &r->has_transit, &r->transit, &r->jitter,
                          &r->expected_prior, &r->received_prior))
        return -1;
    Outgoing *o = &leg->outgoing;
    unsigned long long ssrc, next_sequence, last_timestamp, first_timestamp, source,
        sequence_offset, source_base, target_base;
    if (!PyArg_ParseTuple(outgoing, "KKpKdKpKKKKL", &ssrc, &next_sequence,
                          &o->has_last_timestamp, &last_timestamp, &o->last_wallclock,
                          &first_timestamp, &o->has_source, &source, &sequence_offset,
                          &source_base, &target_base, &o->switches))
        return -1;
    o->ssrc = (uint32_t)ssrc;
    o->next_sequence = (uint32_t)next_sequence & 0xFFFF;
    o->last_timestamp = (uint32_t)last_timestamp;
    o->first_timestamp = (uint32_t)first_timestamp;
    o->source = (uint32_t)source;
    o->sequence_offset = (uint32_t)sequence_offset & 0xFFFF;
    o->source_base = (uint32_t)source_base;
    o->target_base = (uint32_t)target_base;
    memset(&leg->remote, 0, sizeof leg->remote);
    if (family == AF_INET) {
        struct sockaddr_in *a = (void *)&leg->remote;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) goto bad_address;
        leg->remote_len = sizeof *a;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (void *)&leg->remote;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) goto bad_address;
        leg->remote_len = sizeof *a;
    } else {
        goto bad_address;
    }
    if (leg->clock_rate <= 0 || leg->translate < 0 || leg->translate > TRANSLATE_TRANSCODE ||
        leg->codec < 0 || leg->codec >= CODEC_COUNT || leg->dtmf_clock_rate < 0) {
        PyErr_SetString(PyExc_ValueError, "fast path: bad clock rate, translation or codec");
        return -1;
    }
    return 0;
bad_address:
    PyErr_Format(PyExc_ValueError, "fast path: cannot use remote address %s", host);
    return -1;
}

static PyObject *leg_state(Leg *leg) {
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (leg->remote.ss_family == AF_INET) {
        struct sockaddr_in *a = (void *)&leg->remote;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else {
        struct sockaddr_in6 *a = (void *)&leg->remote;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    Reception *r = &leg->reception;
    Outgoing *o = &leg->outgoing;
    Counters *c = &leg->counters;
    return Py_BuildValue(
        "(si(NLLLLNddLL)(kkNkdkNkkkkL)(LLLLLLL))", host, port,
        PyBool_FromLong(r->has_base), r->base, r->max, r->cycles, r->received,
        PyBool_FromLong(r->has_transit), r->transit, r->jitter, r->expected_prior,
        r->received_prior,
        (unsigned long)o->ssrc, (unsigned long)o->next_sequence,
        PyBool_FromLong(o->has_last_timestamp), (unsigned long)o->last_timestamp,
        o->last_wallclock, (unsigned long)o->first_timestamp, PyBool_FromLong(o->has_source),
        (unsigned long)o->source, (unsigned long)o->sequence_offset,
        (unsigned long)o->source_base, (unsigned long)o->target_base, o->switches,
        c->received, c->sent, c->malformed, c->unknown_payload, c->wrong_source, c->rtcp,
        c->sent_octets);
}

static int free_slot(Forwarder *self) {
    for (int i = 0; i < self->capacity; i++)
        if (!self->legs[i].used) return i;
    return -1;
}

static int watch(Forwarder *self, int slot) {
    Leg *leg = &self->legs[slot];
    struct epoll_event event = {.events = EPOLLIN};
    event.data.u64 = (uint64_t)leg->generation << 32 | (uint32_t)slot;
    return epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, leg->fd, &event);
}

static void unwatch(Forwarder *self, int slot) {
    Leg *leg = &self->legs[slot];
    epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, leg->fd, NULL);
    leg->used = 0;
    leg->generation += 1;
}

/* The codec states a pair needs: a transcoded direction decodes with the sending leg's
 * state and encodes with the receiving leg's. */
static int open_codecs(Leg *a, Leg *b) {
    int transcoded = a->translate == TRANSLATE_TRANSCODE || b->translate == TRANSLATE_TRANSCODE;
    if (!transcoded) return 0;
    if (!codec_supported(a->codec) || !codec_supported(b->codec)) {
        PyErr_SetString(PyExc_ValueError, "fast path: cannot transcode these codecs");
        return -1;
    }
    if (open_codec(a) < 0 || open_codec(b) < 0) {
        close_codec(a);
        PyErr_SetString(PyExc_ValueError, "fast path: libopus refused a codec state, "
                                          "or no memory for one");
        return -1;
    }
    return 0;
}

/* Takes two free slots for a and b and watches their sockets; 0, -1 (no slot) or an
 * errno. Called with the lock held and without the GIL. */
static int place_pair(Forwarder *self, Leg *a, Leg *b, int *slot_a, int *slot_b) {
    *slot_a = free_slot(self);
    if (*slot_a < 0) return -1;
    self->legs[*slot_a].used = 1;
    *slot_b = free_slot(self);
    if (*slot_b < 0) {
        self->legs[*slot_a].used = 0;
        return -1;
    }
    a->generation = self->legs[*slot_a].generation;
    b->generation = self->legs[*slot_b].generation;
    a->used = b->used = 1;
    a->peer = *slot_b;
    b->peer = *slot_a;
    self->legs[*slot_a] = *a;
    self->legs[*slot_b] = *b;
    if (watch(self, *slot_a) < 0 || watch(self, *slot_b) < 0) {
        int saved = errno;
        unwatch(self, *slot_a);
        unwatch(self, *slot_b);
        return saved;
    }
    return 0;
}

/* bridge(leg_a, leg_b) -> (slot_a, slot_b). Every method takes the lock without the GIL
 * and gives it back before taking the GIL again: the thread never waits on Python. */
static PyObject *Forwarder_bridge(Forwarder *self, PyObject *args) {
    PyObject *spec_a, *spec_b;
    if (!PyArg_ParseTuple(args, "OO", &spec_a, &spec_b)) return NULL;
    Leg a = {0}, b = {0};
    if (read_leg(spec_a, &a) < 0 || read_leg(spec_b, &b) < 0) return NULL;
    if (open_codecs(&a, &b) < 0) return NULL;
    int slot_a = -1, slot_b = -1, outcome;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    outcome = place_pair(self, &a, &b, &slot_a, &slot_b);
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (outcome != 0) {
        close_codec(&a);
        close_codec(&b);
        if (outcome < 0) {
            PyErr_SetString(PyExc_OverflowError, "fast path: no free slot");
            return NULL;
        }
        errno = outcome;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(ii)", slot_a, slot_b);
}

/* release(slot_a, slot_b) -> (state_a, state_b); the sockets are Python's again. */
static PyObject *Forwarder_release(Forwarder *self, PyObject *args) {
    int slot_a, slot_b;
    if (!PyArg_ParseTuple(args, "ii", &slot_a, &slot_b)) return NULL;
    if (slot_a < 0 || slot_b < 0 || slot_a >= self->capacity || slot_b >= self->capacity) {
        PyErr_SetString(PyExc_ValueError, "fast path: no such slot");
        return NULL;
    }
    Leg a, b;
    int paired;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    paired = self->legs[slot_a].used && self->legs[slot_b].used &&
             !self->legs[slot_a].playing && self->legs[slot_a].peer == slot_b;
    if (paired) {
        a = self->legs[slot_a];
        b = self->legs[slot_b];
        unwatch(self, slot_a);
        unwatch(self, slot_b);
    }
    pthread_mutex_unlock(&self->lock); /* the thread no longer reaches the codecs */
    Py_END_ALLOW_THREADS
    if (!paired) {
        PyErr_SetString(PyExc_ValueError, "fast path: slots are not a bridged pair");
        return NULL;
    }
    close_codec(&a);
    close_codec(&b);
    return Py_BuildValue("(NN)", leg_state(&a), leg_state(&b));
}

/* The one slot number a method takes, checked against the table; 0, or -1 with an error. */
static int parse_slot(Forwarder *self, PyObject *args, int *slot) {
    if (!PyArg_ParseTuple(args, "i", slot)) return -1;
    if (*slot < 0 || *slot >= self->capacity) {
        PyErr_SetString(PyExc_ValueError, "fast path: no such slot");
        return -1;
    }
    return 0;
}

/* snapshot(slot) -> the leg's state as release() would give it, the leg staying here */
static PyObject *Forwarder_snapshot(Forwarder *self, PyObject *args) {
    int slot;
    if (parse_slot(self, args, &slot) < 0) return NULL;
    Leg leg;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    leg = self->legs[slot];
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return leg_state(&leg);
}

/* counters(slot) -> (received, sent, malformed, unknown_payload, wrong_source, rtcp,
 *                    sent_octets) */
static PyObject *Forwarder_counters(Forwarder *self, PyObject *args) {
    int slot;
    if (parse_slot(self, args, &slot) < 0) return NULL;
    Counters c;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    c = self->legs[slot].counters;
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(LLLLLLL)", c.received, c.sent, c.malformed, c.unknown_payload,
                         c.wrong_source, c.rtcp, c.sent_octets);
}

static void stop_thread(Forwarder *self) {
    if (!self->thread_started) return;
    self->stopping = 1;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->thread_started = 0;
}

/* Arms the 20 ms tick when the first leg plays, disarms it after the last. */
static void set_timer(Forwarder *self, int running) {
    struct itimerspec spec = {{0, 0}, {0, 0}};
    if (running) spec.it_interval.tv_nsec = spec.it_value.tv_nsec = TICK_NS;
    timerfd_settime(self->timer_fd, 0, &spec, NULL);
}

/* play(leg_spec, frames, frame_length, position, (ssrc, sequence, timestamp, step)) -> slot:
 * the leg's far end hears the looped frames from the next tick on. */
static PyObject *Forwarder_play(Forwarder *self, PyObject *args) {
    PyObject *spec, *frames;
    Py_ssize_t frame_length, position;
    unsigned long ssrc, sequence, timestamp, step;
    if (!PyArg_ParseTuple(args, "OSnn(kkkk)", &spec, &frames, &frame_length, &position, &ssrc,
                          &sequence, &timestamp, &step))
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(frames);
    if (frame_length <= 0 || frame_length > MAX_RTP || size == 0 || size % frame_length ||
        position < 0 || position >= size / frame_length) {
        PyErr_SetString(PyExc_ValueError, "fast path: frames are not whole frames of a loop");
        return NULL;
    }
    Leg leg = {0};
    if (read_leg(spec, &leg) < 0) return NULL;
    leg.peer = -1;
    leg.playing = 1;
    leg.frames_object = frames;
    leg.frames = (const unsigned char *)PyBytes_AS_STRING(frames);
    leg.frame_length = frame_length;
    leg.frame_count = size / frame_length;
    leg.position = position;
    leg.source_ssrc = (uint32_t)ssrc;
    leg.source_sequence = (uint32_t)sequence & 0xFFFF;
    leg.source_timestamp = (uint32_t)timestamp;
    leg.source_step = (uint32_t)step;
    /* its own descriptor: were Python to close the socket while this plays, the number
     * could name another call's socket by the next tick */
    leg.fd = fcntl(leg.fd, F_DUPFD_CLOEXEC, 0);
    if (leg.fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_INCREF(frames);
    int slot;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    slot = free_slot(self);
    if (slot >= 0) {
        leg.generation = self->legs[slot].generation;
        leg.used = 1;
        self->legs[slot] = leg;
        self->players[self->player_count++] = slot;
        if (self->player_count == 1) set_timer(self, 1);
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (slot < 0) {
        close(leg.fd);
        Py_DECREF(frames);
        PyErr_SetString(PyExc_OverflowError, "fast path: no free slot");
        return NULL;
    }
    return PyLong_FromLong(slot);
}

/* stop_playing(slot) -> (position, (ssrc, sequence, timestamp), outgoing, counters) */
static PyObject *Forwarder_stop_playing(Forwarder *self, PyObject *args) {
    int slot;
    if (parse_slot(self, args, &slot) < 0) return NULL;
    Leg leg;
    int playing;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    playing = self->legs[slot].used && self->legs[slot].playing;
    if (playing) {
        leg = self->legs[slot];
        for (int p = 0; p < self->player_count; p++)
            if (self->players[p] == slot) {
                self->players[p] = self->players[--self->player_count];
                break;
            }
        if (self->player_count == 0) set_timer(self, 0);
        self->legs[slot].used = self->legs[slot].playing = 0;
        self->legs[slot].generation += 1;
        self->legs[slot].frames_object = NULL;
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (!playing) {
        PyErr_SetString(PyExc_ValueError, "fast path: the slot is not playing");
        return NULL;
    }
    close(leg.fd); /* the duplicate play() took */
    PyObject *state = leg_state(&leg);
    Py_DECREF(leg.frames_object);
    if (state == NULL) return NULL;
    /* leg_state: (host, port, reception, outgoing, counters) */
    PyObject *result = Py_BuildValue(
        "(n(kkk)OO)", leg.position, (unsigned long)leg.source_ssrc,
        (unsigned long)leg.source_sequence, (unsigned long)leg.source_timestamp,
        PyTuple_GET_ITEM(state, 3), PyTuple_GET_ITEM(state, 4));
    Py_DECREF(state);
    return result;
}

static PyObject *Forwarder_close(Forwarder *self, PyObject *Py_UNUSED(ignored)) {
    stop_thread(self);
    Py_RETURN_NONE;
}

static int Forwarder_init(Forwarder *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"capacity", NULL};
    int capacity = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|i", keywords, &capacity)) return -1;
    if (capacity < 2 || capacity > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "fast path: capacity out of range");
        return -1;
    }
    if (self->legs != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fast path: already initialised");
        return -1;
    }
    self->legs = PyMem_Calloc((size_t)capacity, sizeof(Leg));
    if (self->legs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->players = PyMem_Calloc((size_t)capacity, sizeof(int));
    if (self->players == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->capacity = capacity;
    pthread_mutex_init(&self->lock, NULL);
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    self->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (self->epoll_fd < 0 || self->timer_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event tick = {.events = EPOLLIN, .data.u64 = TIMER_TOKEN};
    if (epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, self->timer_fd, &tick) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (pthread_create(&self->thread, NULL, run, self) != 0) {
        PyErr_SetString(PyExc_OSError, "fast path: cannot start its thread");
        return -1;
    }
    self->thread_started = 1;
    return 0;
}

static void Forwarder_dealloc(Forwarder *self) {
    stop_thread(self);
    for (int i = 0; self->legs != NULL && i < self->capacity; i++) {
        if (self->legs[i].used) close_codec(&self->legs[i]);
        if (self->legs[i].used && self->legs[i].playing) close(self->legs[i].fd);
        Py_CLEAR(self->legs[i].frames_object);
    }
    if (self->epoll_fd > 0) close(self->epoll_fd);
    if (self->timer_fd > 0) close(self->timer_fd);
    PyMem_Free(self->legs);
    PyMem_Free(self->players);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Forwarder_methods[] = {
    {"bridge", (PyCFunction)Forwarder_bridge, METH_VARARGS,
     "bridge(leg_a, leg_b) -> (slot_a, slot_b): forward between two legs off the loop."},
    {"release", (PyCFunction)Forwarder_release, METH_VARARGS,
     "release(slot_a, slot_b) -> (state_a, state_b): stop, hand the legs' state back."},
    {"snapshot", (PyCFunction)Forwarder_snapshot, METH_VARARGS,
     "snapshot(slot) -> the leg's state, read while it stays on the fast path."},
    {"counters", (PyCFunction)Forwarder_counters, METH_VARARGS,
     "counters(slot) -> the leg's counters since it was bridged here."},
    {"play", (PyCFunction)Forwarder_play, METH_VARARGS,
     "play(leg, frames, frame_length, position, (ssrc, sequence, timestamp, step)) -> slot: "
     "loop the frames to the leg's far end, a frame every 20 ms."},
    {"stop_playing", (PyCFunction)Forwarder_stop_playing, METH_VARARGS,
     "stop_playing(slot) -> (position, (ssrc, sequence, timestamp), outgoing, counters)."},
    {"close", (PyCFunction)Forwarder_close, METH_NOARGS, "Stop the forwarding thread."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "warmline.media._fastpath.Forwarder",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RTP pass-through for bridged leg pairs on a thread of its own.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_methods = Forwarder_methods,
};

/* ---- G.722 for Python (codecs.py) ------------------------------------- */

/* The relay thread's G.722 for the Python path too: an encoder and a decoder, each with
 * the state of one direction, as codecs.py's _G722 holds them. */
typedef struct {
    PyObject_HEAD
    G722Encoder encoder;
    G722Decoder decoder;
} G722Codec;

static int G722Codec_init(G722Codec *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "", keywords)) return -1;
    g722_encoder_reset(&self->encoder);
    g722_decoder_reset(&self->decoder);
    return 0;
}

/* encode(samples) -> bytes: native 16-bit samples (a numpy int16 array), an octet each */
static PyObject *G722Codec_encode(G722Codec *self, PyObject *args) {
    Py_buffer pcm;
    if (!PyArg_ParseTuple(args, "y*", &pcm)) return NULL;
    if (pcm.len % 2 != 0) {
        PyBuffer_Release(&pcm);
        PyErr_SetString(PyExc_ValueError, "G.722: samples are 16-bit, an even byte count");
        return NULL;
    }
    Py_ssize_t count = pcm.len / 2;
    PyObject *payload = PyBytes_FromStringAndSize(NULL, count);
    if (payload != NULL) {
        int16_t *samples = PyMem_Malloc((size_t)(count ? count : 1) * sizeof *samples);
        if (samples == NULL) {
            Py_CLEAR(payload);
            PyErr_NoMemory();
        } else {
            memcpy(samples, pcm.buf, (size_t)pcm.len); /* the buffer may be unaligned */
            g722_encode(&self->encoder, samples, (size_t)count,
                        (unsigned char *)PyBytes_AS_STRING(payload));
            PyMem_Free(samples);
        }
    }
    PyBuffer_Release(&pcm);
    return payload;
}

/* decode(payload) -> bytearray: native 16-bit samples, one an octet */
static PyObject *G722Codec_decode(G722Codec *self, PyObject *args) {
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "y*", &payload)) return NULL;
    PyObject *pcm = PyByteArray_FromStringAndSize(NULL, payload.len * 2);
    if (pcm != NULL)
        g722_decode(&self->decoder, payload.buf, (size_t)payload.len,
                    (int16_t *)(void *)PyByteArray_AS_STRING(pcm));
    PyBuffer_Release(&payload);
    return pcm;
}

static PyMethodDef G722Codec_methods[] = {
    {"encode", (PyCFunction)G722Codec_encode, METH_VARARGS,
     "encode(samples) -> bytes: 8 kHz native int16 samples, an octet each (64 kbit/s)."},
    {"decode", (PyCFunction)G722Codec_decode, METH_VARARGS,
     "decode(payload) -> bytearray: the lower band's 8 kHz native int16 samples."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject G722CodecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "warmline.media._fastpath.G722Codec",
    .tp_basicsize = sizeof(G722Codec),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "G.722 at 64 kbit/s with an 8 kHz interface, as G722(8000, 64000) codes it: "
              "an encoder and a decoder, one direction each.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)G722Codec_init,
    .tp_methods = G722Codec_methods,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastpath",
    .m_doc = "The relay's compiled pass-through path.",
    .m_size = -1,
};

/* Copies g711.py's table `name` (bytes, or a numpy array's bytes) of `size` bytes. */
static int copy_table(PyObject *tables, const char *name, void *target, Py_ssize_t size) {
    PyObject *table = PyObject_GetAttrString(tables, name);
    if (table == NULL) return -1;
    PyObject *raw = PyBytes_Check(table) ? (Py_INCREF(table), table)
                                         : PyObject_CallMethod(table, "tobytes", NULL);
    Py_DECREF(table);
    if (raw == NULL) return -1;
    int fits = PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) == size;
    if (fits) memcpy(target, PyBytes_AS_STRING(raw), (size_t)size);
    Py_DECREF(raw);
    if (!fits) {
        PyErr_Format(PyExc_ImportError, "fast path: g711.%s is not %zd bytes", name, size);
        return -1;
    }
    return 0;
}

static int copy_g711_tables(void) {
    PyObject *tables = PyImport_ImportModule("warmline.media.g711");
    if (tables == NULL) return -1;
    int failed = copy_table(tables, "ULAW_TO_ALAW", ulaw_to_alaw, 256) < 0 ||
                 copy_table(tables, "ALAW_TO_ULAW", alaw_to_ulaw, 256) < 0 ||
                 copy_table(tables, "ULAW_TO_LINEAR", linear_from_ulaw, 512) < 0 ||
                 copy_table(tables, "ALAW_TO_LINEAR", linear_from_alaw, 512) < 0 ||
                 copy_table(tables, "LINEAR_TO_ULAW", ulaw_from_linear, 65536) < 0 ||
                 copy_table(tables, "LINEAR_TO_ALAW", alaw_from_linear, 65536) < 0;
    Py_DECREF(tables);
    return failed ? -1 : 0;
}

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (copy_g711_tables() < 0) return NULL;
    opus_loaded = load_opus();
    if (PyType_Ready(&ForwarderType) < 0 || PyType_Ready(&G722CodecType) < 0) return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL) return NULL;
    /* The codec keys (sdp.py's) this build transcodes between on its thread. */
    PyObject *transcodes = opus_loaded
                               ? Py_BuildValue("(ssss)", "pcmu", "pcma", "g722", "opus")
                               : Py_BuildValue("(sss)", "pcmu", "pcma", "g722");
    if (transcodes == NULL || PyModule_AddObject(module, "TRANSCODES", transcodes) < 0) {
        Py_XDECREF(transcodes);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&ForwarderType);
    if (PyModule_AddObject(module, "Forwarder", (PyObject *)&ForwarderType) < 0) {
        Py_DECREF(&ForwarderType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&G722CodecType);
    if (PyModule_AddObject(module, "G722Codec", (PyObject *)&G722CodecType) < 0) {
        Py_DECREF(&G722CodecType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
