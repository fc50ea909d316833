// Fused CPU kernels for the numpy and torch (CPU) backends, in the style of llm.c's train_gpt2.c.
//
// The Array API ops in llmscratch/ops make one pass over memory per operator (GELU's forward is eight);
// each kernel here makes one or two, and keeps its temporaries in registers. The math is the same as
// the op it replaces (see that op's docstring); tests/test_cpu_kernels.py checks every kernel against it.
// Arrays are C-contiguous. Every kernel is a template over float and double, exported as name_f32 / name_f64.
//
// The file is built twice (llmscratch/kernels/cpu_fused.py). Built with -fopenmp-simd (the numpy backend's
// build), only the `omp simd` hints count and every kernel runs on the calling thread: numpy's OpenBLAS keeps
// its own threads, and an OpenMP team spinning beside them on the same cores made steps 5x slower. Built with
// -fopenmp (the torch backend's build, loaded after torch, so it shares torch's OpenMP threads) the
// `omp parallel for` loops split their rows or elements across those threads.

#include <cmath>
#include <cstdint>
#include <cstring>

// e^x for x ≤ 88 (callers stay below 80), written so that a loop of it vectorises (std::exp does not
// without -ffast-math).
// x = k·ln2 + r with |r| ≤ ln2/2, so e^x = 2^k · e^r: e^r is a degree-7 Taylor polynomial (relative error
// below 6e-9 on that interval, under float's half ulp), and 2^k is built straight into the exponent bits.
// double keeps std::exp: float64 runs are for checking, where accuracy matters more than speed.
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;  // below -87 e^x is a denormal: e^-87 ≈ 0 serves (and a NaN passes through)
    const float k = std::nearbyint(x * 1.44269504f);  // round(x / ln2)
    const float r = (x - k * 0.693145752f) - k * 1.42860677e-6f;  // ln2 split in two for an exact product
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // the float 2^k
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}
static inline double exp_approx(double x) { return std::exp(x); }

// ---- GELU, tanh form: out = x·σ(2u), u = √(2/π)(x + 0.044715x³) ----------------------------------------

template <typename T>
static inline T gelu_sigma(T x) {  // σ(2u) = 1/(1 + e^{-2u}), the exponent clamped at 80 as ops/activations.py
    const T minus_2u = x * (T(-2 * 0.7978845608028654) + T(-2 * 0.7978845608028654 * 0.044715) * (x * x));
    return T(1) / (T(1) + exp_approx(minus_2u > T(80) ? T(80) : minus_2u));
}

template <typename T>
void gelu_forward(T* out, T* sig, const T* x, int64_t n) {  // x, out, sig (n,); sig = σ(2u) saved for the backward
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        sig[i] = gelu_sigma(x[i]);
        out[i] = x[i] * sig[i];
    }
}

template <typename T>
void gelu_backward(T* dx, const T* dout, const T* x, const T* sig, int64_t n) {  // dx = dout·(s + x·s(1-s)·2u')
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const T s = sig[i];
        const T du = T(2 * 0.7978845608028654) + T(6 * 0.7978845608028654 * 0.044715) * (x[i] * x[i]);
        dx[i] = dout[i] * (s + (s - s * s) * x[i] * du);
    }
}

// ---- LayerNorm over the last axis: out = (x - mean)·rstd·w + b ---------------------------------------

template <typename T>
static inline T xhat_of(T x, T mean, T rstd) {  // the normalised input, recomputed where the backward needs it
    return (x - mean) * rstd;
}

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C, T eps) {
    // x, out (N,C); w, b (C,) (b may be null); mean, rstd (N,) saved for the backward
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const T* xn = x + n * C;
        T* on = out + n * C;
        T m = 0;
#pragma omp simd reduction(+ : m)
        for (int64_t c = 0; c < C; c++) m += xn[c];
        m /= C;
        T var = 0;
#pragma omp simd reduction(+ : var)
        for (int64_t c = 0; c < C; c++) var += (xn[c] - m) * (xn[c] - m);
        const T r = T(1) / std::sqrt(var / C + eps);
        for (int64_t c = 0; c < C; c++) on[c] = xhat_of(xn[c], m, r) * w[c] + (b ? b[c] : T(0));
        mean[n] = m;
        rstd[n] = r;
    }
}

template <typename T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* mean, const T* rstd, const T* w,
                        int64_t N, int64_t C) {
    // dx (N,C) is written; dw, db (C,) are written (db may be null):
    // dx = rstd·(dout·w - mean(dout·w) - xhat·mean(dout·w·xhat)),  dw = Σ_n dout·xhat,  db = Σ_n dout
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {  // dx: rows are independent
        const T *dn = dout + n * C, *xn = x + n * C;
        const T m = mean[n], r = rstd[n];
        T mean_d = 0, mean_dx = 0;
#pragma omp simd reduction(+ : mean_d, mean_dx)
        for (int64_t c = 0; c < C; c++) {
            const T d = dn[c] * w[c];
            mean_d += d;
            mean_dx += d * (xn[c] - m) * r;
        }
        mean_d /= C;
        mean_dx /= C;
        T* dxn = dx + n * C;
        for (int64_t c = 0; c < C; c++) dxn[c] = r * (dn[c] * w[c] - mean_d - xhat_of(xn[c], m, r) * mean_dx);
    }
    // dw, db: sums down the rows, so each thread takes a block of columns (16 wide, one vector's worth)
    const int64_t blocks = (C + 15) / 16;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int64_t c = c0; c < c1; c++) {
            dw[c] = 0;
            if (db) db[c] = 0;
        }
        for (int64_t n = 0; n < N; n++) {
            const T *dn = dout + n * C, *xn = x + n * C;
            for (int64_t c = c0; c < c1; c++) dw[c] += dn[c] * xhat_of(xn[c], mean[n], rstd[n]);
            if (db)
                for (int64_t c = c0; c < c1; c++) db[c] += dn[c];
        }
    }
}

// ---- AdamW, one parameter tensor, in place (the same order of operations as llmscratch/optim.py) ----------

template <typename T>
void adamw_step(T* p, T* m, T* v, const T* g, int64_t n, T decay, T b1, T b2, T step_size, T rsqrt_bc2, T eps) {
    // decay = 1 - lr·wd (1 for tensors without weight decay); step_size = lr / (1 - β1ᵗ); rsqrt_bc2 = 1/√(1 - β2ᵗ)
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (T(1) - b1) * g[i];
        v[i] = b2 * v[i] + (T(1) - b2) * (g[i] * g[i]);
        p[i] = p[i] * decay - step_size * (m[i] / (std::sqrt(v[i]) * rsqrt_bc2 + eps));
    }
}

// ---- attention probabilities: the rows of P = softmax(scale · S + M) -------------------------------------

template <typename T, bool masked>
static void softmax_row(T* p, const T* s, const uint8_t* keep, int64_t seen, int64_t K, T scale) {
    // p[j] = e^{scale·(s[j] - max)} / Σ over the keys j < seen that keep (if masked) lets through; 0 elsewhere.
    // Each loop does one thing over all K keys: simple loops with a fixed trip count vectorise.
    T mx = -INFINITY;
    for (int64_t j = 0; j < seen; j++) mx = (!masked || keep[j]) && s[j] > mx ? s[j] : mx;
    for (int64_t j = 0; j < K; j++) p[j] = exp_approx((s[j] - mx) * scale);
    for (int64_t j = 0; j < K; j++) p[j] = j < seen && (!masked || keep[j]) ? p[j] : T(0);
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < K; j++) sum += p[j];
    const T inv = sum > 0 ? T(1) / sum : T(0);  // no visible key: every p[j] is 0 already
    for (int64_t j = 0; j < K; j++) p[j] *= inv;
}

template <typename T>
void attention_softmax_forward(T* P, const T* S, const uint8_t* key_mask, int64_t B, int64_t rows, int64_t T_,
                               int64_t K, bool causal, T scale) {
    // S, P (B, rows, K): rows = heads·T_ queries, each over K keys. Query t = row % T_ may see key j when
    // j ≤ t + K - T_ (if causal) and key_mask[b, j] ≠ 0 (if given, (B, K)). Hidden keys get P = 0; a query
    // that sees no key at all gets a row of zeros (ops/attention.py's convention).
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * rows; r++) {
        int64_t seen = causal ? r % T_ + K - T_ + 1 : K;  // keys 0..seen-1 pass the causal mask
        seen = seen < 0 ? 0 : (seen > K ? K : seen);
        if (key_mask)
            softmax_row<T, true>(P + r * K, S + r * K, key_mask + (r / rows) * K, seen, K, scale);
        else
            softmax_row<T, false>(P + r * K, S + r * K, nullptr, seen, K, scale);
    }
}

template <typename T>
void attention_softmax_backward(T* dS, const T* P, int64_t n_rows, int64_t K, T scale) {
    // in place, dS (n_rows, K) holds dP on entry: dS = scale · P ∘ (dP - rowsum(dP ∘ P))
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; r++) {
        const T* p = P + r * K;
        T* ds = dS + r * K;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < K; j++) dot += ds[j] * p[j];
        for (int64_t j = 0; j < K; j++) ds[j] = scale * p[j] * (ds[j] - dot);
    }
}

// ---- exported symbols: name_f32 and name_f64 -------------------------------------------------------------

#define EXPORT_ALL(T, suffix)                                                                                  \
    extern "C" void gelu_forward_##suffix(T* out, T* sig, const T* x, int64_t n) { gelu_forward(out, sig, x, n); } \
    extern "C" void gelu_backward_##suffix(T* dx, const T* dout, const T* x, const T* sig, int64_t n) {          \
        gelu_backward(dx, dout, x, sig, n);                                                                     \
    }                                                                                                          \
    extern "C" void layernorm_forward_##suffix(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b,   \
                                               int64_t N, int64_t C, T eps) {                                  \
        layernorm_forward(out, mean, rstd, x, w, b, N, C, eps);                                                \
    }                                                                                                          \
    extern "C" void layernorm_backward_##suffix(T* dx, T* dw, T* db, const T* dout, const T* x, const T* mean,  \
                                                const T* rstd, const T* w, int64_t N, int64_t C) {             \
        layernorm_backward(dx, dw, db, dout, x, mean, rstd, w, N, C);                                          \
    }                                                                                                          \
    extern "C" void adamw_step_##suffix(T* p, T* m, T* v, const T* g, int64_t n, T decay, T b1, T b2,          \
                                        T step_size, T rsqrt_bc2, T eps) {                                     \
        adamw_step(p, m, v, g, n, decay, b1, b2, step_size, rsqrt_bc2, eps);                                   \
    }                                                                                                          \
    extern "C" void attention_softmax_forward_##suffix(T* P, const T* S, const uint8_t* key_mask, int64_t B,   \
                                                       int64_t rows, int64_t T_, int64_t K, int64_t causal,    \
                                                       T scale) {                                              \
        attention_softmax_forward(P, S, key_mask, B, rows, T_, K, causal != 0, scale);                         \
    }                                                                                                          \
    extern "C" void attention_softmax_backward_##suffix(T* dS, const T* P, int64_t n_rows, int64_t K, T scale) { \
        attention_softmax_backward(dS, P, n_rows, K, scale);                                                   \
    }

EXPORT_ALL(float, f32)
EXPORT_ALL(double, f64)
