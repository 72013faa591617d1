"""C kernels of the fp32 library's SIMD host layout (``emit_fp32(..., vector_width > 1)``).

Plain C99 loops written so that ``gcc -O3`` vectorises them without reassociating any sum:
the innermost loop of a product runs over ``EMG_PANEL`` independent outputs, the S4D
recurrence over channels. The generated source defines ``EMG_PANEL`` and ``EMG_GROUP``.
"""

# ruff: noqa: E501  (lines of C)

from emg2qwerty_ssm.export.cgen.csource import LAYERNORM_C, LOG_SOFTMAX_C

VECTOR_KERNELS = (
    r"""
/* y = W x + b with W in panels of EMG_PANEL outputs: w[(p * n_in + i) * EMG_PANEL + j] is
 * W[p * EMG_PANEL + j][i], b padded to whole panels. The j loop is one SIMD multiply-add. */
static void linear(const float *x, int n_in, const float *w, const float *b, float *y,
                   int n_out) {
    for (int p = 0; p < n_out; p += EMG_PANEL) {
        float acc[EMG_PANEL];
        const float *wp = w + (long)p * n_in;
        for (int j = 0; j < EMG_PANEL; ++j) acc[j] = b[p + j];
        for (int i = 0; i < n_in; ++i) {
            const float xi = x[i];
            const float *wi = wp + (long)i * EMG_PANEL;
            for (int j = 0; j < EMG_PANEL; ++j) acc[j] += wi[j] * xi;
        }
        const int rem = n_out - p < EMG_PANEL ? n_out - p : EMG_PANEL;
        for (int j = 0; j < rem; ++j) y[p + j] = acc[j];
    }
}

/* linear() of EMG_GROUP frames at once (x rows x_step apart, y rows y_step apart): each
 * panel row of W is loaded once for the group, so the weights stream from memory once per
 * step instead of once per frame. Per output the same sum in the same order. */
static void linear_group(const float *x, int x_step, int n_in, const float *w, const float *b,
                         float *y, int y_step, int n_out) {
    for (int p = 0; p < n_out; p += EMG_PANEL) {
        float acc[EMG_GROUP][EMG_PANEL];
        const float *wp = w + (long)p * n_in;
        for (int f = 0; f < EMG_GROUP; ++f)
            for (int j = 0; j < EMG_PANEL; ++j) acc[f][j] = b[p + j];
        for (int i = 0; i < n_in; ++i) {
            const float *wi = wp + (long)i * EMG_PANEL;
            for (int f = 0; f < EMG_GROUP; ++f) {
                const float xi = x[(long)f * x_step + i];
                for (int j = 0; j < EMG_PANEL; ++j) acc[f][j] += wi[j] * xi;
            }
        }
        const int rem = n_out - p < EMG_PANEL ? n_out - p : EMG_PANEL;
        for (int f = 0; f < EMG_GROUP; ++f)
            for (int j = 0; j < rem; ++j) y[(long)f * y_step + p + j] = acc[f][j];
    }
}

/* frames x linear(): groups of EMG_GROUP frames, then one frame at a time. */
static void linear_frames(const float *x, int frames, int x_step, int n_in, const float *w,
                          const float *b, float *y, int y_step, int n_out) {
    int f = 0;
    for (; f + EMG_GROUP <= frames; f += EMG_GROUP)
        linear_group(x + (long)f * x_step, x_step, n_in, w, b, y + (long)f * y_step, y_step,
                     n_out);
    for (; f < frames; ++f) linear(x + (long)f * x_step, n_in, w, b, y + (long)f * y_step, n_out);
}

"""
    + LAYERNORM_C
    + r"""
/* EMG_ACTIVATIONS */

/* S4D recurrence, mode-major: s = [re (modes, H) | im (modes, H)]; the h loop vectorises and
 * y[h] sums the modes in order, as the scalar layout does. */
static void ssm_step(float *restrict s, const float *restrict ar, const float *restrict ai,
                     const float *restrict wr, const float *restrict wi,
                     const float *restrict d, const float *restrict u, float *restrict y,
                     int h_dim, int modes) {
    for (int h = 0; h < h_dim; ++h) y[h] = 0.0f;
    for (int m = 0; m < modes; ++m) {
        const long base = (long)m * h_dim;
        float *restrict sr = s + base;
        float *restrict si = s + (long)modes * h_dim + base;
        const float *restrict a_r = ar + base, *restrict a_i = ai + base;
        const float *restrict w_r = wr + base, *restrict w_i = wi + base;
        for (int h = 0; h < h_dim; ++h) {
            const float r = sr[h], i = si[h], uh = u[h];
            const float nr = a_r[h] * r - a_i[h] * i + w_r[h] * uh;
            const float ni = a_r[h] * i + a_i[h] * r + w_i[h] * uh;
            sr[h] = nr;
            si[h] = ni;
            y[h] += nr;
        }
    }
    for (int h = 0; h < h_dim; ++h) y[h] += d[h] * u[h];
}

"""
    + LOG_SOFTMAX_C
)

LIBM_ACTIVATIONS = r"""
static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
"""

# GELU's erf and the GLU sigmoid's exp as branch-free inline code that gcc vectorises (libm's
# erff / expf are calls, one element at a time). erf: the rational approximation of Eigen /
# XLA, x clamped to [-4, 4], max abs error 4e-7 (libm erff: 5e-8); exp: Cephes' expf
# (x = n ln2 + r, degree-6 polynomial, 2^n from the exponent bits), max rel error 8e-8.
INLINE_ACTIVATIONS = r"""
static float erf_inline(float x) {
    x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
    const float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return x * p / q;
}

static float exp_inline(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int bits = ((int)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static float gelu(float x) { return 0.5f * x * (1.0f + erf_inline(x * 0.7071067811865476f)); }

static float sigmoid(float x) { return 1.0f / (1.0f + exp_inline(-x)); }
"""
