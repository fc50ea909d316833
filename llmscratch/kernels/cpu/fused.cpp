// Fused CPU kernels for the numpy and torch (CPU) backends, in the style of llm.c's train_gpt2.c.
//
// The Array API ops in llmscratch/ops make one pass over memory per operator (GELU's forward is eight);
// each kernel here makes one or two, and keeps its temporaries in registers. The math is the same as
// the op it replaces (see that op's docstring); tests/test_cpu_kernels.py checks every kernel against it.
// Arrays are C-contiguous (matmul and the attention kernels read strided views, see there). Every kernel is a template
// over float and double, exported as name_f32 / name_f64 by wrappers that cpu_fused.py generates (see the end).
//
// The file is built twice (llmscratch/kernels/cpu_fused.py). Built with -fopenmp, the one numpy and torch use,
// the `omp parallel for` loops split their rows or elements across OpenMP threads (torch's own, when torch
// is loaded first; numpy's OpenBLAS is held to one thread meanwhile, since its threads spinning beside an
// OpenMP team on the same cores made products up to 50x slower). Built with -fopenmp-simd, the fallback where
// OpenMP does not build, only the `omp simd` hints count and every kernel runs on the calling thread.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

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

// ---- softmax + cross-entropy over the vocabulary, fused -----------------------------------------------------
//
// forward: for each row n whose target y is kept (y ≠ ignore_index): probs[n] = softmax(z[n]) and its loss
// logsumexp(z[n]) - z[n][y]; ignored rows get probs 0. Writes the sum of the kept rows' losses (added in row
// order, in double: the same bits for any thread count), the number of kept rows, and a row whose target is
// out of range (-1 if none) for the caller's error. backward: dz[n] = scale·(probs[n] - onehot(y)) on kept
// rows, 0 on the rest (scale = dloss / the number of kept rows).

template <typename T>
void cross_entropy_forward(T* probs, double* loss_sum, int64_t* kept_and_bad, const T* logits, const int64_t* targets,
                           int64_t N, int64_t V, int64_t ignore_index) {
    std::vector<double> row_loss(N, 0.0);
    int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
    for (int64_t n = 0; n < N; n++) {
        const T* z = logits + n * V;
        T* p = probs + n * V;
        const int64_t y = targets[n];
        if (y == ignore_index || y < 0 || y >= V) {
            if (y != ignore_index) bad = n;
            std::memset(p, 0, V * sizeof(T));
            continue;
        }
        T mx = z[0];
        for (int64_t v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t v = 0; v < V; v++) {
            p[v] = exp_approx(z[v] - mx);
            sum += p[v];
        }
        const T inv = T(1) / sum;
#pragma omp simd
        for (int64_t v = 0; v < V; v++) p[v] *= inv;
        row_loss[n] = double(mx + std::log(sum) - z[y]);
    }
    double total = 0;
    int64_t kept = 0;
    for (int64_t n = 0; n < N; n++) {
        total += row_loss[n];
        kept += targets[n] != ignore_index;
    }
    *loss_sum = total;
    kept_and_bad[0] = kept;
    kept_and_bad[1] = bad;
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* probs, const int64_t* targets, int64_t N, int64_t V,
                            int64_t ignore_index, T scale) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        T* d = dlogits + n * V;
        const T* p = probs + n * V;
        const int64_t y = targets[n];
        const T s = y == ignore_index ? T(0) : scale;
#pragma omp simd
        for (int64_t v = 0; v < V; v++) d[v] = s * p[v];
        if (y != ignore_index) d[y] -= scale;
    }
}

// ---- the global gradient norm and AdamW, over every parameter tensor in one call ------------------------------
//
// The tensors' elements are cut into chunks of at most CHUNK (a tensor is one chunk or more, never part of
// two), so a single OpenMP team shares all the work however the sizes fall. The norm's partial sums, one per
// chunk, are added up in chunk order afterwards: the same bits whatever the number of threads.

static inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
static inline int64_t clamp(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }
static inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int64_t CHUNK = 16384;

struct Chunk {
    int64_t tensor, begin, end;
};

static std::vector<Chunk> chunks_of(const int64_t* sizes, int64_t count) {
    std::vector<Chunk> chunks;
    for (int64_t t = 0; t < count; t++)
        for (int64_t i = 0; i < sizes[t]; i += CHUNK) chunks.push_back({t, i, min(i + CHUNK, sizes[t])});
    return chunks;
}

template <typename T>
void sum_of_squares(const T* const* xs, const int64_t* sizes, int64_t count, double* out) {  // Σ_t Σ_i xs[t][i]²
    const std::vector<Chunk> chunks = chunks_of(sizes, count);
    std::vector<double> partial(chunks.size());
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks.size(); c++) {
        const T* x = xs[chunks[c].tensor];
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = chunks[c].begin; i < chunks[c].end; i++) s += double(x[i]) * double(x[i]);
        partial[c] = s;
    }
    double total = 0;  // in double, whatever T is
    for (double s : partial) total += s;
    *out = total;
}

template <typename T>
void adamw_step(T* const* ps, const T* const* gs, T* const* ms, T* const* vs, const int64_t* sizes, const T* decays,
                int64_t count, T grad_scale, T b1, T b2, T step_size, T rsqrt_bc2, T eps) {
    // for each tensor t (the same order of operations as llmscratch/optim.py), with g = grad_scale·gs[t]:
    //   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  p = p·decay - step_size·m / (√v·rsqrt_bc2 + eps)
    // decays[t] = 1 - lr·wd (1 for tensors without weight decay);
    // step_size = lr / (1 - β1ᵗ); rsqrt_bc2 = 1/√(1 - β2ᵗ)
    const std::vector<Chunk> chunks = chunks_of(sizes, count);
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks.size(); c++) {
        const int64_t t = chunks[c].tensor;
        T *p = ps[t], *m = ms[t], *v = vs[t];
        const T* g = gs[t];
        const T decay = decays[t];
#pragma omp simd
        for (int64_t i = chunks[c].begin; i < chunks[c].end; i++) {
            const T gi = g[i] * grad_scale;
            m[i] = b1 * m[i] + (T(1) - b1) * gi;
            v[i] = b2 * v[i] + (T(1) - b2) * (gi * gi);
            p[i] = p[i] * decay - step_size * (m[i] / (std::sqrt(v[i]) * rsqrt_bc2 + eps));
        }
    }
}

// ---- the whole attention, register-tiled ---------------------------------------------------------------
//
// One task per (batch, kv head): its keys and values are copied once into zero-padded local tiles, then for
// each of its G query heads
//   forward:  S = Q Kᵀ, P = softmax(scale·S) over the keys each query may see, O = P V
//   backward: dP = dO Vᵀ, dS = scale · P ∘ (dP - rowsum(dP ∘ P)), dQ = dS K, dK += dSᵀ Q, dV += Pᵀ dO
// Every product is one of two micro-kernels that keep their sums in registers: `rows_by_keys` (QROWS rows ×
// one vector of keys, summing over D) and `rows_by_dims` (MROWS rows × two vectors of D, summing over keys or
// queries). Under a causal mask a tile stops at the last key its last query sees. A tile that runs past the
// last row repeats that row (the same values to the same place), so there is no remainder code.
// q, k, v, out, dout, dq, dk, dv are strided (B, heads, T or S, D) views with D contiguous: the heads are read
// straight out of the QKV projection and written straight into the (B,T,C) layout. P is (B,H,T,Sp), Sp = S
// rounded up to whole vectors, zero beyond the keys each query may see.

// The vector is one register of the CPU the library is built for (-march=native): 64 bytes (16 floats, 8
// doubles) with AVX-512, else 32 (AVX2). The tiles fit the register file: AVX-512's 32 registers hold 8 rows ×
// 2 vectors of sums, AVX2's 16 hold 6 × 2 (and the two vectors and the broadcast they are summed from).
#if defined(__AVX512F__)
constexpr int VECTOR_BYTES = 64;
constexpr int MROWS = 8;  // rows per rows_by_dims tile (× 2 vectors: 16 sums)
#else
constexpr int VECTOR_BYTES = 32;
constexpr int MROWS = 6;  // (× 2 vectors: 12 sums)
#endif
constexpr int QROWS = 8;  // rows per rows_by_keys tile: 8 independent sums hide the FMA latency

template <typename T>
struct Vector;  // and `lanes`, the integers of the same width and count: the indices of a shuffle
template <>
struct Vector<float> {
    typedef float type __attribute__((vector_size(VECTOR_BYTES)));
    typedef int32_t lanes __attribute__((vector_size(VECTOR_BYTES)));
};
template <>
struct Vector<double> {
    typedef double type __attribute__((vector_size(VECTOR_BYTES)));
    typedef int64_t lanes __attribute__((vector_size(VECTOR_BYTES)));
};
template <typename T>
using vec = typename Vector<T>::type;
template <typename T>
constexpr int64_t VL = VECTOR_BYTES / sizeof(T);

template <typename T>
static inline vec<T> load(const T* p) {
    vec<T> v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

struct Strides {  // of a (B, heads, T, D) view, in elements; D is contiguous
    int64_t b, h, t;
};

// out[r][j0:j0+VL] = Σ_d a[r][d] · bt[d·ldb + j0 : j0+VL] for r < QROWS: a tile of rows against VL keys
template <typename T>
static inline void rows_by_keys(T* const (&out)[QROWS], const T* const (&a)[QROWS], const T* bt, int64_t ldb,
                                int64_t j0, int64_t D) {
    vec<T> acc[QROWS] = {};
    for (int64_t d = 0; d < D; d++) {
        const vec<T> b = load(bt + d * ldb + j0);
#pragma GCC unroll 8
        for (int r = 0; r < QROWS; r++) acc[r] += a[r][d] * b;
    }
#pragma GCC unroll 8
    for (int r = 0; r < QROWS; r++) std::memcpy(out[r] + j0, &acc[r], sizeof acc[r]);
}

// acc[r] = Σ_{j<n} w[r][j·wj] · m[j·ldm : j·ldm + 2VL] for r < MROWS: weighted sums of n rows of m
template <typename T>
static inline void rows_by_dims(vec<T> (&acc)[MROWS][2], const T* const (&w)[MROWS], int64_t wj, const T* m,
                                int64_t ldm, int64_t n) {
    for (auto& a : acc) a[0] = a[1] = vec<T>{};
    for (int64_t j = 0; j < n; j++) {
        const vec<T> m0 = load(m + j * ldm), m1 = load(m + j * ldm + VL<T>);
#pragma GCC unroll 8
        for (int r = 0; r < MROWS; r++) {
            const T x = w[r][j * wj];
            acc[r][0] += x * m0;
            acc[r][1] += x * m1;
        }
    }
}

// The rows i0..last of out = W·M, out[i] = Σ_j W[i][j]·M[j], D columns, by rows_by_dims tiles. W's row i starts at
// w_row(i) with its elements wj apart; M is (n, ldm) with ldm ≥ D rounded up to 2VL. span(r0, r1) gives the range
// of j that rows r0..r1 sum over (the keys they may see); put(i, c0, sums, cols) takes out[i][c0 : c0+cols].
template <typename T, typename Row, typename Span, typename Put>
static void mix_rows(int64_t i0, int64_t last, Row w_row, int64_t wj, const T* m, int64_t ldm, int64_t D, Span span,
                     Put put) {
    for (int64_t r0 = i0; r0 <= last; r0 += MROWS) {
        const int64_t r1 = min(r0 + MROWS - 1, last);
        const auto [first, end] = span(r0, r1);
        const T* w[MROWS];
        for (int r = 0; r < MROWS; r++) w[r] = w_row(min(r0 + r, r1)) + first * wj;
        for (int64_t c0 = 0; c0 < D; c0 += 2 * VL<T>) {
            vec<T> acc[MROWS][2];
            rows_by_dims(acc, w, wj, m + first * ldm + c0, ldm, end - first);
            for (int64_t i = r0; i <= r1; i++) put(i, c0, acc[i - r0], min(D - c0, 2 * VL<T>));
        }
    }
}

template <typename T>
static void gather_rows(T* dst, int64_t ld, const T* src, int64_t stride, int64_t n, int64_t D) {
    for (int64_t i = 0; i < n; i++) {  // (n, D) strided -> (n, ld), zero-padded
        std::memcpy(dst + i * ld, src + i * stride, D * sizeof(T));
        std::memset(dst + i * ld + D, 0, (ld - D) * sizeof(T));
    }
}

// One VL × VL block, transposed in registers: dst[c][r] = src[r][c], rows `stride` (src) and `ld` (dst) apart.
// Round s (VL/2, ..., 2, 1) swaps the top-right and bottom-left s × s blocks of every 2s × 2s block: each row
// pair (i, i + s) trades halves in two two-register shuffles (one vpermt2ps each on AVX-512).
template <typename T>
static inline void transpose_block(T* dst, int64_t ld, const T* src, int64_t stride) {
    constexpr int L = VL<T>;
    typename Vector<T>::lanes c;  // the lane numbers 0..L-1
    for (int l = 0; l < L; l++) c[l] = l;
    vec<T> r[L];
    for (int i = 0; i < L; i++) r[i] = load(src + i * stride);
#pragma GCC unroll 4
    for (int s = L / 2; s >= 1; s /= 2) {
        const auto right = (c & s) != 0;                         // -1 on the lanes of the right s × s block
        const auto for_upper = c + (right & (L - s));            // row i: its left block, then row i+s's left
        const auto for_lower = c + (right & L) + (~right & s);   // row i+s: row i's right block, then its own
#pragma GCC unroll 16
        for (int i = 0; i < L; i++)
            if (!(i & s)) {
                const vec<T> upper = r[i], lower = r[i + s];
                r[i] = __builtin_shuffle(upper, lower, for_upper);
                r[i + s] = __builtin_shuffle(upper, lower, for_lower);
            }
    }
    for (int i = 0; i < L; i++) std::memcpy(dst + i * ld, &r[i], sizeof r[i]);
}

template <typename T>
static void gather_transposed(T* dst, int64_t ld, const T* src, int64_t stride, int64_t n, int64_t D) {
    // (n, D) strided -> (D, ld), zero-padded: whole VL × VL blocks in registers, the edges one element at a time
    const int64_t n_blocks = n / VL<T> * VL<T>, D_blocks = D / VL<T> * VL<T>;
    for (int64_t j = 0; j < n_blocks; j += VL<T>)
        for (int64_t d = 0; d < D_blocks; d += VL<T>) transpose_block(dst + d * ld + j, ld, src + j * stride + d, stride);
    for (int64_t d = 0; d < D; d++) {
        for (int64_t j = d < D_blocks ? n_blocks : 0; j < n; j++) dst[d * ld + j] = src[j * stride + d];
        for (int64_t j = n; j < ld; j++) dst[d * ld + j] = 0;
    }
}

// keys 0..seen-1 pass the causal mask for query i (all S without one); a kv cache puts the T queries last
static inline int64_t keys_seen(int64_t i, int64_t T_, int64_t S, bool causal) {
    return causal ? clamp(i + S - T_ + 1, 0, S) : S;
}

// The pieces mix_rows is built from. Row i of a matrix: base + i·stride (stride 1 walks a column instead).
template <typename T>
static inline auto rows_of(T* base, int64_t stride) {
    return [=](int64_t i) { return base + i * stride; };
}
// Queries r0..r1 sum over the keys the last of them may see (P V, dS K).
static inline auto keys_seen_by(int64_t T_, int64_t S, bool causal) {
    return [=](int64_t, int64_t r1) { return std::pair<int64_t, int64_t>(0, keys_seen(r1, T_, S, causal)); };
}
// Keys j0..j1 sum over the queries that may see the first of them, i ≥ j0 - (S - T) (dSᵀ Q, Pᵀ dO).
static inline auto queries_seeing(int64_t T_, int64_t S, bool causal) {
    return [=](int64_t j0, int64_t) {
        return std::pair<int64_t, int64_t>(causal ? clamp(j0 - (S - T_), 0, T_) : 0, T_);
    };
}
// Row i's sums stored into a strided output row, or added into a padded (·, ld) one.
template <typename T>
static inline auto store_into(T* base, int64_t stride) {
    return [=](int64_t i, int64_t c0, const vec<T>* sums, int64_t cols) {
        std::memcpy(base + i * stride + c0, sums, cols * sizeof(T));
    };
}
template <typename T>
static inline auto add_into(T* base, int64_t ld) {
    return [=](int64_t i, int64_t c0, const vec<T>* sums, int64_t) {
        T* row = base + i * ld + c0;
        for (int64_t c = 0; c < 2 * VL<T>; c++) row[c] += reinterpret_cast<const T*>(sums)[c];
    };
}

// One row of P, in place: p[j] = e^{scale·(p[j] - max)} / Σ over the keys j < seen that keep (if given) lets
// through, 0 for the rest of the row's K keys (whole vectors; keep is read for all K). The loops run over whole
// vectors with per-lane maxima and sums, the hidden keys selected away: they vectorise without remainders.
template <typename T>
static void softmax_row(T* p, const uint8_t* keep, int64_t seen, int64_t K, T scale) {
    T lane_max[VL<T>], lane_sum[VL<T>];
    for (int64_t l = 0; l < VL<T>; l++) lane_max[l] = -INFINITY, lane_sum[l] = 0;
    for (int64_t j0 = 0; j0 < K; j0 += VL<T>) {
#pragma omp simd
        for (int64_t l = 0; l < VL<T>; l++) {
            const T x = j0 + l < seen && (!keep || keep[j0 + l]) ? p[j0 + l] : -INFINITY;
            lane_max[l] = x > lane_max[l] ? x : lane_max[l];
        }
    }
    T mx = -INFINITY;
    for (int64_t l = 0; l < VL<T>; l++) mx = lane_max[l] > mx ? lane_max[l] : mx;
    for (int64_t j0 = 0; j0 < K; j0 += VL<T>) {
#pragma omp simd
        for (int64_t l = 0; l < VL<T>; l++) {
            const T e = exp_approx((p[j0 + l] - mx) * scale);
            p[j0 + l] = j0 + l < seen && (!keep || keep[j0 + l]) ? e : T(0);
            lane_sum[l] += p[j0 + l];
        }
    }
    T sum = 0;
    for (int64_t l = 0; l < VL<T>; l++) sum += lane_sum[l];
    const T inv = sum > 0 ? T(1) / sum : T(0);  // no visible key: every p[j] is 0 already
    for (int64_t j = 0; j < K; j++) p[j] *= inv;
}

// the scores of query rows i0..last against keys 0..width-1: out[i][j] = Σ_d a[i][d]·bt[d][j], rows lda / ldo apart
template <typename T>
static void score_tile(T* out, int64_t ldo, const T* a, int64_t lda, const T* bt, int64_t ldb, int64_t i0,
                       int64_t last, int64_t width, int64_t D) {
    T* o[QROWS];
    const T* x[QROWS];
    for (int r = 0; r < QROWS; r++) {
        o[r] = out + min(i0 + r, last) * ldo;
        x[r] = a + min(i0 + r, last) * lda;
    }
    for (int64_t j0 = 0; j0 < width; j0 += VL<T>) rows_by_keys(o, x, bt, ldb, j0, D);
}

template <typename T>
void attention_tiled_forward(T* out, T* P, const T* q, const T* k, const T* v, const uint8_t* key_mask, int64_t B,
                             int64_t H, int64_t Hkv, int64_t T_, int64_t S, int64_t D, const int64_t* strides,
                             int64_t causal, T scale) {
    const Strides* st = reinterpret_cast<const Strides*>(strides);  // of q, k, v, out
    const Strides sq = st[0], sk = st[1], sv = st[2], so = st[3];
    const int64_t G = H / Hkv, Sp = round_up(S, VL<T>), Dp = round_up(D, 2 * VL<T>);
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < B * Hkv; task++) {
        const int64_t b = task / Hkv, hk = task % Hkv;
        T* kt = new T[D * Sp + S * Dp];  // Kᵀ (D, Sp), then V (S, Dp)
        T* vl = kt + D * Sp;
        gather_transposed(kt, Sp, k + b * sk.b + hk * sk.h, sk.t, S, D);
        gather_rows(vl, Dp, v + b * sv.b + hk * sv.h, sv.t, S, D);
        const uint8_t* keep = key_mask ? key_mask + b * Sp : nullptr;
        for (int64_t h = hk * G; h < hk * G + G; h++) {
            const T* qh = q + b * sq.b + h * sq.h;
            T* oh = out + b * so.b + h * so.h;
            T* Ph = P + (b * H + h) * T_ * Sp;
            for (int64_t i0 = 0; i0 < T_; i0 += QROWS) {
                const int64_t last = min(i0 + QROWS, T_) - 1;
                const int64_t width = round_up(keys_seen(last, T_, S, causal), VL<T>);
                score_tile(Ph, Sp, qh, sq.t, kt, Sp, i0, last, width, D);
                for (int64_t i = i0; i <= last; i++) {
                    T* row = Ph + i * Sp;
                    softmax_row(row, keep, keys_seen(i, T_, S, causal), width, scale);
                    std::memset(row + width, 0, (Sp - width) * sizeof(T));
                }
                mix_rows<T>(i0, last, rows_of(Ph, Sp), 1, vl, Dp, D, keys_seen_by(T_, S, causal), store_into(oh, so.t));
            }
        }
        delete[] kt;
    }
}

template <typename T>
void attention_tiled_backward(T* dq, T* dk, T* dv, const T* dout, const T* P, const T* q, const T* k, const T* v,
                              int64_t B, int64_t H, int64_t Hkv, int64_t T_, int64_t S, int64_t D,
                              const int64_t* strides, int64_t causal, T scale) {
    const Strides* st = reinterpret_cast<const Strides*>(strides);  // of dout, q, k, v, dq, dk, dv
    const Strides sdo = st[0], sq = st[1], sk = st[2], sv = st[3], sdq = st[4], sdk = st[5], sdv = st[6];
    const int64_t G = H / Hkv, Sp = round_up(S, VL<T>), Dp = round_up(D, 2 * VL<T>);
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < B * Hkv; task++) {
        const int64_t b = task / Hkv, hk = task % Hkv;
        // K (S, Dp), Vᵀ (D, Sp), dK and dV sums (S, Dp), and per query head Q and dO (T, Dp), dS (T, Sp)
        T* kl = new T[S * Dp * 3 + D * Sp + T_ * Dp * 2 + T_ * Sp];
        T *vt = kl + S * Dp, *dks = vt + D * Sp, *dvs = dks + S * Dp, *ql = dvs + S * Dp, *dol = ql + T_ * Dp;
        T* ds = dol + T_ * Dp;
        gather_rows(kl, Dp, k + b * sk.b + hk * sk.h, sk.t, S, D);
        gather_transposed(vt, Sp, v + b * sv.b + hk * sv.h, sv.t, S, D);
        std::memset(dks, 0, 2 * S * Dp * sizeof(T));
        for (int64_t h = hk * G; h < hk * G + G; h++) {
            gather_rows(ql, Dp, q + b * sq.b + h * sq.h, sq.t, T_, D);
            gather_rows(dol, Dp, dout + b * sdo.b + h * sdo.h, sdo.t, T_, D);
            const T* Ph = P + (b * H + h) * T_ * Sp;
            T* dqh = dq + b * sdq.b + h * sdq.h;
            for (int64_t i0 = 0; i0 < T_; i0 += QROWS) {
                const int64_t last = min(i0 + QROWS, T_) - 1;
                const int64_t width = round_up(keys_seen(last, T_, S, causal), VL<T>);
                score_tile(ds, Sp, dol, Dp, vt, Sp, i0, last, width, D);  // dP
                for (int64_t i = i0; i <= last; i++) {
                    const T* p = Ph + i * Sp;
                    T* d = ds + i * Sp;
                    T dot = 0;
#pragma omp simd reduction(+ : dot)
                    for (int64_t j = 0; j < width; j++) dot += d[j] * p[j];
                    for (int64_t j = 0; j < width; j++) d[j] = scale * p[j] * (d[j] - dot);
                    std::memset(d + width, 0, (Sp - width) * sizeof(T));
                }
                const auto dq_rows = store_into(dqh, sdq.t);
                mix_rows<T>(i0, last, rows_of(ds, Sp), 1, kl, Dp, D, keys_seen_by(T_, S, causal), dq_rows);  // dQ
            }
            // dK += dSᵀ Q and dV += Pᵀ dO: the rows of dSᵀ and Pᵀ are the columns of dS and P
            mix_rows<T>(0, S - 1, rows_of(ds, 1), Sp, ql, Dp, D, queries_seeing(T_, S, causal), add_into(dks, Dp));
            mix_rows<T>(0, S - 1, rows_of(Ph, 1), Sp, dol, Dp, D, queries_seeing(T_, S, causal), add_into(dvs, Dp));
        }
        for (int64_t j = 0; j < S; j++) {
            std::memcpy(dk + b * sdk.b + hk * sdk.h + j * sdk.t, dks + j * Dp, D * sizeof(T));
            std::memcpy(dv + b * sdv.b + hk * sdv.h + j * sdv.t, dvs + j * Dp, D * sizeof(T));
        }
        delete[] kl;
    }
}

// ---- matrix multiply: out = A·B (+ bias), the linear layers' GEMMs ------------------------------------------
//
// out (M,N) is C-contiguous; A (M,K) and B (K,N) are any 2-D views, element (i,k) at a[i·a_rs + k·a_cs]. The
// product runs as tasks of MROWS rows × one 2VL-wide panel of columns, each one rows_by_dims tile summing over
// all K with its sums in registers, so the output is written once, with the bias added, and never zeroed or
// read. A panel is read where it lies when B's rows are contiguous (x·w, xᵀ·d); the columns that do not fill a
// whole panel, or all of a transposed B (d·wᵀ), are first copied into a zero-padded (K, ·) array (gather_rows,
// gather_transposed), the threads sharing its rows. Which operand stays in cache decides the order of the
// tasks: where B fits in L2 they go row tile by row tile (A streams past once, every panel of B is reused from
// L2), else panel by panel (one K × 2VL panel of B is reused while A streams past).

constexpr int64_t B_KEPT = 512 << 10;  // bytes of B a core's L2 keeps while A streams past

// Asks for the cache lines of a rows × cols block, rows `stride` elements apart, that is about to be written.
// A task's sums take all of K to form, so lines asked for as it starts are there when it stores them; left to
// the hardware, whose prefetchers do not follow a tile's short scattered rows, every store into a fresh output
// waited for its line (in a training step, where the outputs are not in cache, this made the GEMMs 14% slower).
template <typename T>
static inline void prefetch_for_writing(const T* block, int64_t stride, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c += 64 / sizeof(T)) __builtin_prefetch(block + i * stride + c, 1);
}

template <typename T>
void matmul(T* out, const T* a, const T* b, const T* bias, int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs,
            int64_t b_rs, int64_t b_cs) {
    constexpr int64_t PANEL = 2 * VL<T>;
    const int64_t Np = round_up(N, PANEL), panels = Np / PANEL, tiles = (M + MROWS - 1) / MROWS;
    const int64_t in_place = b_cs == 1 ? N / PANEL * PANEL : 0;  // B's columns read where they lie
    const int64_t ldp = Np - in_place;                            // the rest, copied: (K, ldp)
    T* packed = new T[K * ldp];
    const bool rows_outer = K * Np * int64_t(sizeof(T)) <= B_KEPT;
    const auto all_of_k = [=](int64_t, int64_t) { return std::pair<int64_t, int64_t>(0, K); };
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t k0 = 0; k0 < K; k0 += 64) {  // in blocks of 64 rows of B
            const int64_t n = min(64, K - k0);
            if (b_cs == 1)
                gather_rows(packed + k0 * ldp, ldp, b + k0 * b_rs + in_place, b_rs, n, N - in_place);
            else  // b_rs == 1: the columns of B are rows in memory
                gather_transposed(packed + k0 * ldp, ldp, b + k0, b_cs, N, n);
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < panels * tiles; task++) {
            const int64_t c0 = (rows_outer ? task % panels : task / tiles) * PANEL;
            const int64_t i0 = (rows_outer ? task / panels : task % tiles) * MROWS;
            const bool direct = c0 < in_place;
            vec<T> add[2] = {};  // the bias of this panel's columns, 0 beyond N
            if (bias) std::memcpy(add, bias + c0, min(N - c0, PANEL) * sizeof(T));
            const auto put = [=](int64_t i, int64_t, const vec<T>* sums, int64_t cols) {
                const vec<T> row[2] = {sums[0] + add[0], sums[1] + add[1]};
                std::memcpy(out + i * N + c0, row, cols * sizeof(T));
            };
            const int64_t rows = min(i0 + MROWS, M) - i0, cols = min(N - c0, PANEL);
            prefetch_for_writing(out + i0 * N + c0, N, rows, cols);
            mix_rows<T>(i0, i0 + rows - 1, rows_of(a, a_rs), a_cs, direct ? b + c0 : packed + c0 - in_place,
                        direct ? b_rs : ldp, cols, all_of_k, put);
        }
    }
    delete[] packed;
}

// ---- the product with a quantized weight (llmscratch/ops/quantize.py) ------------------------------------
//
// out (M,N) = a (M,K) @ ŵ (K,N) + bias, ŵ[k,n] = q[k,n] · scale[k/G, n], never a float copy of ŵ: each byte
// of q is widened in registers as it is used. int8: q (K,N) int8. int4: q (Kp/2,N) uint8, byte [k/2, n] holding
// row k (low nibble) and row k+1 (high), each offset by 8.
//
// A decoding step (M = 1) reads the whole weight for one row of output: it runs at the memory's speed when the
// weight streams through in long runs. So the work is cut into tasks of one row m, a panel of up to QCOLS
// columns (a run of that many bytes per weight row; a whole row where N ≤ QCOLS) and a slice of the K rows,
// with enough slices to make QTASKS tasks: each task streams a block of consecutive rows. A task
// sums a[m,k]·q[k,n] over each group four weight rows at a time (one load and store of the sums per four rows),
// adds the group's sum times its scale into its slice's partial result, and the slices' partial results are
// added in slice order afterwards (the same bits whatever the number of threads). More rows (the beams, a
// prompt) read the weight again per row, from cache where it fits.

constexpr int64_t QCOLS = 1024;  // the widest panel: the group's sums and the running total stay in L1
constexpr int64_t QTASKS = 16;   // tasks at least, where K and N allow: work for every thread of the team
constexpr int64_t QSLICE_ROWS = 64;  // rows of a slice at least

// sum[j] += Σ_r x[r] · value(r, j) over four weight rows (x zero past the last), value widening the integers
template <typename T, typename Value>
static inline void add_rows(T* sum, const T* x, int64_t cols, Value value) {
    const T x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
#pragma omp simd
    for (int64_t j = 0; j < cols; j++)
        sum[j] += x0 * value(0, j) + x1 * value(1, j) + x2 * value(2, j) + x3 * value(3, j);
}

// acc[0:cols] = Σ_k x[k] · ŵ[k, n0 + j] over rows k0..k1 (k0 a multiple of 4), group by group
template <typename T>
static void quantized_panel(T* acc, const T* x, const uint8_t* q, const T* scale, int64_t N, int64_t K, int64_t G,
                            bool int4, int64_t k0, int64_t k1, int64_t n0, int64_t cols) {
    alignas(64) T part[QCOLS];
    std::memset(acc, 0, cols * sizeof(T));
    for (int64_t g0 = k0; g0 < k1;) {
        std::memset(part, 0, cols * sizeof(T));
        const int64_t g1 = min((g0 / G + 1) * G, k1);  // the end of g0's group, or of the slice
        for (int64_t k = g0; k < g1; k += 4) {
            const int64_t n = min(4, g1 - k);  // weight rows this pass
            const T xs[4] = {x[k], n > 1 ? x[k + 1] : T(0), n > 2 ? x[k + 2] : T(0), n > 3 ? x[k + 3] : T(0)};
            if (int4) {  // rows k..k+3: the low and high nibbles of bytes k/2 and k/2 + 1
                const uint8_t* b0 = q + k / 2 * N + n0;
                const uint8_t* b1 = n > 2 ? b0 + N : b0;  // (n ≤ 2: x2 = x3 = 0, b0 read again)
                add_rows(part, xs, cols, [=](int r, int64_t j) {
                    const uint8_t byte = r < 2 ? b0[j] : b1[j];
                    return T(int(r % 2 ? byte >> 4 : byte & 15) - 8);
                });
            } else {
                const int8_t* row = reinterpret_cast<const int8_t*>(q) + k * N + n0;
                const int64_t last = (n - 1) * N;  // rows past the last weight row read it again (x zero)
                add_rows(part, xs, cols, [=](int r, int64_t j) { return T(row[min(r * N, last) + j]); });
            }
        }
        const T* s = scale + g0 / G * N + n0;
#pragma omp simd
        for (int64_t j = 0; j < cols; j++) acc[j] += s[j] * part[j];
        g0 = g1;
    }
}

template <typename T>
void quantized_matmul(T* out, const T* a, const uint8_t* q, const T* scale, const T* bias, int64_t M, int64_t N,
                      int64_t K, int64_t G, int64_t int4) {
    if (M == 0 || N == 0) return;
    const int64_t width = min(N, QCOLS), panels = (N + width - 1) / width;
    const int64_t slices = clamp((QTASKS + panels * M - 1) / (panels * M), 1, (K + QSLICE_ROWS - 1) / QSLICE_ROWS);
    const int64_t per_slice = round_up((K + slices - 1) / slices, 4);  // rows of a slice (whole int4 bytes)
    std::vector<T> partial(slices * M * N);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < slices * panels * M; t++) {
        const int64_t slice = t % slices, panel = t / slices % panels, m = t / slices / panels;
        const int64_t n0 = panel * width, k0 = slice * per_slice;
        quantized_panel(partial.data() + (slice * M + m) * N + n0, a + m * K, q, scale, N, K, G, int4 != 0, k0,
                        min(k0 + per_slice, K), n0, min(width, N - n0));
    }
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < N; j++) {
            T sum = bias ? bias[j] : T(0);
            for (int64_t slice = 0; slice < slices; slice++) sum += partial[(slice * M + m) * N + j];
            out[m * N + j] = sum;
        }
}

// ---- exported symbols ------------------------------------------------------------------------------------
// Each template above whose name is in cpu_fused.py's KERNELS table is exported as name_f32 and name_f64; the
// extern "C" wrappers are generated from that table, which is the one place their argument lists are written.

// the bytes of one vector: rows of the attention probabilities (and the key mask) are padded to whole vectors
extern "C" int64_t vector_bytes() { return VECTOR_BYTES; }
