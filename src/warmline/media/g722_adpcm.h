/* G.722 at 64 kbit/s (ITU-T G.722 mode 1) with an 8 kHz linear interface, for _fastpath.c.
 *
 * G.722 splits 16 kHz audio into two 8 kHz sub-bands with a QMF and codes each with
 * ADPCM: 6 bits a sample for the lower band, 2 for the higher, one octet per pair. At an
 * 8 kHz interface (the narrowband bridge warmline runs; the `G722` package's
 * G722(8000, 64000), the classic implementations' "8000 sample rate" option) there is no
 * QMF: each 8 kHz sample goes straight into the lower band's encoder (halved, the band
 * carrying 15-bit samples), the higher band is encoded from silence, and the decoder puts
 * out the lower band's reconstructed signal (doubled) and ignores the higher band's bits.
 * A wideband far end hears the narrowband audio as the lower half of its band. One
 * payload octet is one 8 kHz sample, so G.722's RTP clock (8000, RFC 3551's quirk) is
 * also its sampling rate here.
 *
 * Everything below follows the Recommendation's blocks (its names in the comments:
 * QUANTL, INVQAL, LOGSCL, SCALEL, UPPOL1/2, UPZERO, FILTEP, FILTEZ, ...) in its 16-bit
 * fixed-point arithmetic, so the output is bit-exact with the `G722` package at the same
 * interface (tests/unit/test_codecs.py checks it). The tables are the Recommendation's.
 * Static functions only: the file is included by _fastpath.c.
 */
#ifndef WARMLINE_G722_ADPCM_H
#define WARMLINE_G722_ADPCM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* One sub-band's ADPCM state: the adaptive predictor (two poles, six zeros), its
 * histories and the quantizer's scale factor. A history's index is how many samples
 * back, as the Recommendation numbers them (DLT1..DLT6, P1, P2, R1, R2). */
typedef struct {
    int estimate;          /* S: the signal predicted for the next sample */
    int zero_estimate;     /* SZ: the six-zero section's share of it */
    int pole[3];           /* A1, A2 at [1], [2] */
    int zero[7];           /* B1..B6 at [1]..[6] */
    int difference[7];     /* DLT: the quantized differences ([0]: the newest, in passing) */
    int partial[3];        /* P: the partially reconstructed signal (DLT + SZ) */
    int reconstructed[3];  /* R: the reconstructed signal (DLT + S) */
    int log_scale;         /* NB: the scale factor in the log domain */
    int scale;             /* DET: the quantizer's scale factor */
} G722Band;

typedef struct {
    G722Band lower;
    unsigned char higher_bits; /* the higher band's code from silence, in place (g722_encode) */
} G722Encoder;

typedef struct {
    G722Band lower; /* the higher band's bits are not heard at an 8 kHz interface */
} G722Decoder;

/* ---- the Recommendation's tables ------------------------------------------ */

/* QUANTL: the lower band's decision levels (times the scale factor, >> 12), and the
 * 6-bit codes of the interval a difference falls in, negative and positive. */
static const int16_t g722_low_levels[30] = {
    0,   35,  72,  110, 150, 190, 233,  276,  323,  370,  422,  473,  530,  587,  650,
    714, 786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
};
static const uint8_t g722_low_code_negative[31] = {
    0,  63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
    18, 17, 16, 15, 14, 13, 12, 11, 10, 9,  8,  7,  6,  5,  4,
};
static const uint8_t g722_low_code_positive[31] = {
    0,  61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47,
    46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32,
};

/* INVQAL: the lower band's 4-bit inverse quantizer (a code's top four bits), which the
 * predictor and the scale factor adapt from at every bit rate. */
static const int16_t g722_low_inverse4[16] = {
    0,     -20456, -12896, -8968, -6288, -4240, -2584, -1200,
    20456, 12896,  8968,   6288,  4240,  2584,  1200,  0,
};

/* INVQBL at 64 kbit/s: the 6-bit inverse quantizer the decoder's output comes from. */
static const int16_t g722_low_inverse6[64] = {
    -136,   -136,   -136,   -136,   -24808, -21904, -19008, -16704,
    -14984, -13512, -12280, -11192, -10232, -9360,  -8576,  -7856,
    -7192,  -6576,  -6000,  -5456,  -4944,  -4464,  -4008,  -3576,
    -3168,  -2776,  -2400,  -2032,  -1688,  -1360,  -1040,  -728,
    24808,  21904,  19008,  16704,  14984,  13512,  12280,  11192,
    10232,  9360,   8576,   7856,   7192,   6576,   6000,   5456,
    4944,   4464,   4008,   3576,   3168,   2776,   2400,   2032,
    1688,   1360,   1040,   728,    432,    136,    -432,   -136,
};

/* LOGSCL: a 4-bit code's magnitude class, and what each class adds to NB. */
static const uint8_t g722_low_magnitude_class[16] = {0, 7, 6, 5, 4, 3, 2, 1,
                                                     7, 6, 5, 4, 3, 2, 1, 0};
static const int16_t g722_low_log_step[8] = {-60, -30, 58, 172, 334, 538, 1198, 3042};

/* The higher band: its one decision level, its 2-bit codes (by magnitude 1 or 2), its
 * inverse quantizer, and the log-scale steps by magnitude class. */
#define G722_HIGH_LEVEL 564
static const uint8_t g722_high_code_negative[3] = {0, 1, 0};
static const uint8_t g722_high_code_positive[3] = {0, 3, 2};
static const int16_t g722_high_inverse[4] = {-7408, -1616, 7408, 1616};
static const uint8_t g722_high_magnitude_class[4] = {2, 1, 2, 1};
static const int16_t g722_high_log_step[3] = {0, -214, 798};

/* SCALEL/SCALEH: 2^(k/32) for k in 0..31, in Q11: the mantissa of DET from NB. */
static const int16_t g722_inverse_log[32] = {
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543,
    2599, 2656, 2714, 2774, 2834, 2896, 2960, 3025, 3091, 3158, 3228,
    3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
};

/* ---- arithmetic ------------------------------------------------------------ */

/* The Recommendation's 16-bit limiting of a sum or product. */
static inline int g722_limit16(int value) {
    return value > 32767 ? 32767 : value < -32768 ? -32768 : value;
}

static inline int g722_clamp(int value, int low, int high) {
    return value > high ? high : value < low ? low : value;
}

/* The sign the predictor's adaptation compares: 1 for a negative value, 0 otherwise
 * (zero counts as positive). */
static inline int g722_negative(int value) {
    return value < 0;
}

/* A difference's magnitude as the quantizers compare it: |e| for e >= 0, |e| - 1 for
 * e < 0 (the one's complement of a negative 16-bit value). */
static inline int g722_quantizer_magnitude(int difference) {
    return difference >= 0 ? difference : -(difference + 1);
}

/* ---- one band's adaptation (Block 3: scale factor; Block 4: predictor) ---- */

static void g722_band_reset(G722Band *band, int initial_scale) {
    memset(band, 0, sizeof *band);
    band->scale = initial_scale;
}

/* LOGSCL/LOGSCH then SCALEL/SCALEH: NB leaks (127/128) and steps by the code's class;
 * DET = 2^(NB / 2048 + 2 - headroom) in fixed point (headroom 8 lower, 10 higher). */
static void g722_adapt_scale(G722Band *band, int log_step, int log_ceiling, int headroom) {
    int log_scale = (band->log_scale * 127 >> 7) + log_step;
    band->log_scale = g722_clamp(log_scale, 0, log_ceiling);
    int mantissa = g722_inverse_log[band->log_scale >> 6 & 31];
    int shift = headroom - (band->log_scale >> 11);
    int scaled = shift < 0 ? mantissa << -shift : mantissa >> shift;
    band->scale = scaled << 2;
}

/* UPPOL2: the second pole coefficient, from the signs of P now, one and two samples
 * back; limited to +-0.375 (12288). */
static int g722_next_second_pole(const G722Band *band, int partial) {
    int now = g722_negative(partial);
    int first_pull = g722_limit16(band->pole[1] * 4);
    if (now == g722_negative(band->partial[1])) first_pull = g722_limit16(-first_pull);
    int sign_step = now == g722_negative(band->partial[2]) ? 128 : -128;
    int pole = (first_pull >> 7) + sign_step + (band->pole[2] * 32512 >> 15);
    return g722_clamp(pole, -12288, 12288);
}

/* UPPOL1: the first pole coefficient, limited so the two poles stay stable
 * (|A1| <= 1 - 2^-4 - A2, 15360 being 1 - 2^-4 in Q14). */
static int g722_next_first_pole(const G722Band *band, int partial, int second_pole) {
    int sign_step = g722_negative(partial) == g722_negative(band->partial[1]) ? 192 : -192;
    int pole = g722_limit16(sign_step + (band->pole[1] * 32640 >> 15));
    int bound = g722_limit16(15360 - second_pole);
    return g722_clamp(pole, -bound, bound);
}

/* UPPOL2, UPPOL1, DELAYA and FILTEP: the poles adapt to P, P and R move one sample back,
 * and the pole section's estimate (SP) of the next sample is returned. */
static int g722_adapt_poles(G722Band *band, int partial, int reconstructed) {
    int second_pole = g722_next_second_pole(band, partial);
    int first_pole = g722_next_first_pole(band, partial, second_pole);
    band->pole[1] = first_pole;
    band->pole[2] = second_pole;
    band->partial[2] = band->partial[1];
    band->partial[1] = partial;
    band->reconstructed[2] = band->reconstructed[1];
    band->reconstructed[1] = reconstructed;
    int estimate = (first_pole * g722_limit16(reconstructed * 2) >> 15) +
                   (second_pole * g722_limit16(band->reconstructed[2] * 2) >> 15);
    return g722_limit16(estimate);
}

/* UPZERO, DELAYZ and FILTEZ in one pass: each zero coefficient leaks (255/256) and steps
 * +-128 towards agreement of the new difference's sign with the one it weighs (no step
 * for a zero difference), the differences move one sample back, and the zero section's
 * estimate (SZ) of the next sample is returned. From the oldest down, so each DLTi is
 * read before the one after it takes its place. */
static int g722_adapt_zeros(G722Band *band, int difference) {
    int step = difference == 0 ? 0 : 128;
    int now = g722_negative(difference);
    int estimate = 0;
    band->difference[0] = difference;
    for (int i = 6; i >= 1; i--) {
        int agree = now == g722_negative(band->difference[i]);
        band->zero[i] = g722_limit16((agree ? step : -step) + (band->zero[i] * 32640 >> 15));
        band->difference[i] = band->difference[i - 1];
        estimate += band->zero[i] * g722_limit16(band->difference[i] * 2) >> 15;
    }
    return g722_limit16(estimate);
}

/* Block 4: RECONS, PARREC, the pole and zero sections' adaptation and PREDIC, from DLT,
 * the quantized difference of the sample just coded: the next sample's estimate. */
static void g722_adapt_predictor(G722Band *band, int difference) {
    int reconstructed = g722_limit16(band->estimate + difference);
    int partial = g722_limit16(band->zero_estimate + difference);
    int pole_estimate = g722_adapt_poles(band, partial, reconstructed);
    band->zero_estimate = g722_adapt_zeros(band, difference);
    band->estimate = g722_limit16(pole_estimate + band->zero_estimate);
}

/* ---- the lower band -------------------------------------------------------- */

/* QUANTL: the 6-bit code of the difference `error` at the band's scale: of the interval
 * below the first decision level (1..29) its magnitude does not reach, 30 past them all. */
static int g722_quantize_low(int error, int scale) {
    int magnitude = g722_quantizer_magnitude(error);
    int interval = 1;
    while (interval < 30 && magnitude >= (g722_low_levels[interval] * scale >> 12))
        interval++;
    return error < 0 ? g722_low_code_negative[interval] : g722_low_code_positive[interval];
}

/* INVQAL, LOGSCL, SCALEL and Block 4 for a lower band code: what encoder and decoder
 * both do with it once it is known. */
static void g722_adapt_low(G722Band *band, int code) {
    int code4 = code >> 2;
    int difference = band->scale * g722_low_inverse4[code4] >> 15;
    g722_adapt_scale(band, g722_low_log_step[g722_low_magnitude_class[code4]], 18432, 8);
    g722_adapt_predictor(band, difference);
}

static int g722_encode_low(G722Band *band, int sample) {
    int code = g722_quantize_low(g722_limit16(sample - band->estimate), band->scale);
    g722_adapt_low(band, code);
    return code;
}

/* INVQBL (64 kbit/s) and the decoder's LIMIT: the band's 15-bit output for `code`. */
static int g722_decode_low(G722Band *band, int code) {
    int difference = band->scale * g722_low_inverse6[code] >> 15;
    int output = g722_clamp(band->estimate + difference, -16384, 16383);
    g722_adapt_low(band, code);
    return output;
}

/* ---- the higher band ------------------------------------------------------- */

static int g722_encode_high(G722Band *band, int sample) {
    int error = g722_limit16(sample - band->estimate);
    int magnitude = g722_quantizer_magnitude(error) >= (G722_HIGH_LEVEL * band->scale >> 12)
                        ? 2 : 1;
    int code = error < 0 ? g722_high_code_negative[magnitude]
                         : g722_high_code_positive[magnitude];
    int difference = band->scale * g722_high_inverse[code] >> 15;
    g722_adapt_scale(band, g722_high_log_step[g722_high_magnitude_class[code]], 22528, 10);
    g722_adapt_predictor(band, difference);
    return code;
}

/* ---- the codec at an 8 kHz interface --------------------------------------- */

/* The higher band coded from silence never changes its code. By induction from the
 * reset state: its estimate S is 0, so the difference 0 - S is 0, coded 3 (the smallest
 * positive step), whose inverse quantization at the reset scale is 8 * 1616 >> 15 = 0;
 * LOGSCH limits NB back to 0 (a step of -214), so DET stays 8; with DH = 0 the zero
 * coefficients stay 0 and R = S + DH stays 0, so the next S is 0 again (the pole
 * coefficients do adapt, but only ever weigh zeros). The code is computed once, by the
 * band's own encoder, instead of 8000 times a second. */
static void g722_encoder_reset(G722Encoder *encoder) {
    g722_band_reset(&encoder->lower, 32);
    G722Band higher;
    g722_band_reset(&higher, 8);
    encoder->higher_bits = (unsigned char)(g722_encode_high(&higher, 0) << 6);
}

static void g722_decoder_reset(G722Decoder *decoder) {
    g722_band_reset(&decoder->lower, 32);
}

/* `count` 8 kHz samples into `count` octets: the lower band's code (of the sample halved:
 * the band carries 15 bits) in the low six bits, the higher band's (coded from silence)
 * in the top two. */
static void g722_encode(G722Encoder *encoder, const int16_t *pcm, size_t count,
                        unsigned char *out) {
    for (size_t i = 0; i < count; i++)
        out[i] = (unsigned char)(encoder->higher_bits |
                                 g722_encode_low(&encoder->lower, pcm[i] >> 1));
}

/* `count` octets into `count` 8 kHz samples: the lower band, back at full scale. */
static void g722_decode(G722Decoder *decoder, const unsigned char *payload, size_t count,
                        int16_t *pcm) {
    for (size_t i = 0; i < count; i++)
        pcm[i] = (int16_t)(g722_decode_low(&decoder->lower, payload[i] & 0x3F) * 2);
}

#endif /* WARMLINE_G722_ADPCM_H */
