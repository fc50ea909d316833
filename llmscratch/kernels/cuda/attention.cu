// Attention kernels for the cupy backend (llmscratch/kernels/cuda_attention.py launches them).
//
// Legend: B batch, H query heads, Hkv kv heads (G = H/Hkv queries per kv head), T queries, S keys, D head dim.
// Every tensor is contiguous: q, out, dq (B,H,T,D); k, v, dk, dv (B,Hkv,S,D); key_mask (B,S) as 0/1 bytes;
// lse (B,H,T). A query t may see key j when key_mask[b,j] and, if causal, j <= t + S - T (the bottom-right
// causal mask of the reference op, which a KV cache needs). A query that sees no key gets 0 and lse = +inf.
//
// Two families:
//  1. softmax_forward / softmax_backward: the (B,H,T,S) scores come from cuBLAS (cupy matmul); one block
//     per row fuses the scale, the masks and the softmax (backward: dS = s · P ∘ (dP - rowsum(dP ∘ P))).
//  2. flash_forward / flash_backward_dkdv / flash_backward_dq: FlashAttention-2's algorithm with one thread
//     per query (or key) row; tiles of K, V (or Q, dO) are staged in shared memory by the whole block.
//     The backward is split in two kernels so every output row has one owner and no atomics are needed.
//
// Only dynamic shared memory and __syncthreads() are used (no warp shuffles), so this same file also runs
// on the CPU under tests/cuda_emulator/emulator.h, which is how the tests execute it on machines without a GPU.

// No headers: CuPy compiles this with NVRTC, which has none. Infinity comes from its bit pattern.
template <typename T> __device__ __forceinline__ T inf_();
template <> __device__ __forceinline__ float inf_<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double inf_<double>() { return __longlong_as_double(0x7ff0000000000000LL); }
#define INF_OF(T) inf_<T>()

template <typename T> __device__ __forceinline__ T exp_(T x);
template <> __device__ __forceinline__ float exp_<float>(float x) { return expf(x); }
template <> __device__ __forceinline__ double exp_<double>(double x) { return exp(x); }
template <typename T> __device__ __forceinline__ T log_(T x);
template <> __device__ __forceinline__ float log_<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double log_<double>(double x) { return log(x); }

__device__ __forceinline__ bool visible(const unsigned char* key_mask, int b, int S, int T, int t, int j, int causal) {
    return key_mask[(long)b * S + j] && (!causal || j <= t + S - T);
}

// The query row a thread owns in the grid (ceil(T/BLOCK), B*H), and the kv head its query head reads
// (GQA: query heads hkv·G .. hkv·G + G-1 share kv head hkv).
struct QueryRow {
    int b, bh, t;
    bool active;  // t < T: the last block can be partly empty
    long kv;      // offset of this head's K and V, (S,D) each
    int key_end;  // keys [0, key_end) are all any row of this block can see (the causal diagonal of its last row)
};

__device__ __forceinline__ QueryRow query_row(int H, int Hkv, int T_, int S, int D, int causal) {
    QueryRow r;
    r.bh = blockIdx.y;
    r.b = r.bh / H;
    r.t = blockIdx.x * blockDim.x + threadIdx.x;
    r.active = r.t < T_;
    r.kv = ((long)r.b * Hkv + (r.bh % H) / (H / Hkv)) * S * D;
    const int last_row = min(T_ - 1, (int)((blockIdx.x + 1) * blockDim.x) - 1);
    r.key_end = causal ? min(S, last_row + S - T_ + 1) : S;
    return r;
}

// Tree reduction over the block in shared memory; blockDim.x must be a power of two. All threads get the result.
template <typename T, bool IS_MAX>
__device__ T block_reduce(T value, T* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            T a = scratch[threadIdx.x], b = scratch[threadIdx.x + half];
            scratch[threadIdx.x] = IS_MAX ? (a > b ? a : b) : a + b;
        }
        __syncthreads();
    }
    T result = scratch[0];
    __syncthreads();  // scratch is reused by the next reduction
    return result;
}

// ---- 1. fused scale + mask + softmax between cuBLAS matmuls ---------------------------------------------

// grid (B*H*T), block power of two; shared: blockDim.x * sizeof(T).  scores, probs (B,H,T,S), row-major.
template <typename T>
__global__ void softmax_forward(const T* scores, T* probs, const unsigned char* key_mask,
                                int H, int T_, int S, T scale, int causal) {
    extern __shared__ unsigned char smem[];
    T* scratch = reinterpret_cast<T*>(smem);
    const long row = blockIdx.x;
    const int b = row / ((long)H * T_), t = row % T_;
    const T* s = scores + row * S;
    T* p = probs + row * S;
    T m = -INF_OF(T);
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (visible(key_mask, b, S, T_, t, j, causal) && scale * s[j] > m) m = scale * s[j];
    m = block_reduce<T, true>(m, scratch);
    T l = 0;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (visible(key_mask, b, S, T_, t, j, causal)) l += exp_(scale * s[j] - m);
    l = block_reduce<T, false>(l, scratch);
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        p[j] = (l > 0 && visible(key_mask, b, S, T_, t, j, causal)) ? exp_(scale * s[j] - m) / l : (T)0;
}

// dscores = scale · P ∘ (dP - rowsum(dP ∘ P)): the gradient of the raw (unscaled) scores.
template <typename T>
__global__ void softmax_backward(const T* probs, const T* dprobs, T* dscores, int S, T scale) {
    extern __shared__ unsigned char smem[];
    T* scratch = reinterpret_cast<T*>(smem);
    const long row = blockIdx.x;
    const T* p = probs + row * S;
    const T* dp = dprobs + row * S;
    T dot = 0;
    for (int j = threadIdx.x; j < S; j += blockDim.x) dot += p[j] * dp[j];
    dot = block_reduce<T, false>(dot, scratch);
    for (int j = threadIdx.x; j < S; j += blockDim.x) dscores[row * S + j] = scale * p[j] * (dp[j] - dot);
}

// ---- 2. FlashAttention-2 with one thread per row ------------------------------------------------------

// Loads rows [r0, r0+n) of a (rows, D) matrix into tile (n, D), zero beyond the last row; all threads help.
template <typename T, int D>
__device__ void load_tile(T* tile, const T* src, int r0, int n, int rows) {
    for (int i = threadIdx.x; i < n * D; i += blockDim.x) {
        int r = r0 + i / D;
        tile[i] = r < rows ? src[(long)r * D + i % D] : (T)0;
    }
}

// grid (ceil(T/BLOCK), B*H), block BLOCK threads, one query row each; shared: 2 * BLOCK * D * sizeof(T).
template <typename T, int D>
__global__ void flash_forward(const T* q, const T* k, const T* v, const unsigned char* key_mask, T* out, T* lse,
                              int H, int Hkv, int T_, int S, T scale, int causal) {
    extern __shared__ unsigned char smem[];
    T* Kt = reinterpret_cast<T*>(smem);
    T* Vt = Kt + blockDim.x * D;
    const int BLOCK = blockDim.x;
    const QueryRow row = query_row(H, Hkv, T_, S, D, causal);
    const int b = row.b, bh = row.bh, t = row.t;
    const bool active = row.active;
    const T *kh = k + row.kv, *vh = v + row.kv;
    T qr[D], acc[D];
    for (int d = 0; d < D; ++d) {
        qr[d] = active ? q[((long)bh * T_ + t) * D + d] * scale : (T)0;
        acc[d] = 0;
    }
    T m = -INF_OF(T), l = 0;
    for (int j0 = 0; j0 < row.key_end; j0 += BLOCK) {
        const int n = min(BLOCK, S - j0);
        __syncthreads();  // the previous tile is no longer read
        load_tile<T, D>(Kt, kh, j0, n, S);
        load_tile<T, D>(Vt, vh, j0, n, S);
        __syncthreads();
        if (!active) continue;
        T tile_max = -INF_OF(T);
        for (int jj = 0; jj < n; ++jj) {
            if (!visible(key_mask, b, S, T_, t, j0 + jj, causal)) continue;
            T s = 0;
            for (int d = 0; d < D; ++d) s += qr[d] * Kt[jj * D + d];
            tile_max = s > tile_max ? s : tile_max;
        }
        if (tile_max == -INF_OF(T)) continue;  // nothing visible in this tile
        const T m_new = m > tile_max ? m : tile_max;
        const T correction = exp_(m - m_new);  // 0 while m is still -inf
        l *= correction;
        for (int d = 0; d < D; ++d) acc[d] *= correction;
        for (int jj = 0; jj < n; ++jj) {
            if (!visible(key_mask, b, S, T_, t, j0 + jj, causal)) continue;
            T s = 0;
            for (int d = 0; d < D; ++d) s += qr[d] * Kt[jj * D + d];
            const T p = exp_(s - m_new);
            l += p;
            for (int d = 0; d < D; ++d) acc[d] += p * Vt[jj * D + d];
        }
        m = m_new;
    }
    if (!active) return;
    for (int d = 0; d < D; ++d) out[((long)bh * T_ + t) * D + d] = l > 0 ? acc[d] / l : (T)0;
    lse[(long)bh * T_ + t] = l > 0 ? m + log_(l) : INF_OF(T);
}

// dK, dV: grid (ceil(S/BLOCK), B*Hkv), one key row per thread, looping over the query tiles of all G heads that
// read this kv head. shared: BLOCK * (2D + 2) * sizeof(T).  delta = rowsum(dO ∘ O), (B,H,T).
template <typename T, int D>
__global__ void flash_backward_dkdv(const T* q, const T* k, const T* v, const unsigned char* key_mask,
                                    const T* dout, const T* lse, const T* delta, T* dk, T* dv,
                                    int H, int Hkv, int T_, int S, T scale, int causal) {
    extern __shared__ unsigned char smem[];
    T* Qt = reinterpret_cast<T*>(smem);
    T* dOt = Qt + blockDim.x * D;
    T* Lt = dOt + blockDim.x * D;
    T* Dt = Lt + blockDim.x;
    const int BLOCK = blockDim.x, bkv = blockIdx.y, b = bkv / Hkv, hkv = bkv % Hkv, G = H / Hkv;
    const int j = blockIdx.x * BLOCK + threadIdx.x;
    const bool active = j < S;
    T kr[D], vr[D], dkr[D], dvr[D];
    for (int d = 0; d < D; ++d) {
        kr[d] = active ? k[((long)bkv * S + j) * D + d] : (T)0;
        vr[d] = active ? v[((long)bkv * S + j) * D + d] : (T)0;
        dkr[d] = dvr[d] = 0;
    }
    // the first query row that can see the first key of this block (causal), rounded down to a tile
    const int first_row = causal ? max(0, (int)(blockIdx.x * BLOCK) - (S - T_)) : 0;
    for (int g = 0; g < G; ++g) {
        const long bh = (long)b * H + hkv * G + g;
        for (int t0 = first_row - first_row % BLOCK; t0 < T_; t0 += BLOCK) {
            const int n = min(BLOCK, T_ - t0);
            __syncthreads();
            load_tile<T, D>(Qt, q + bh * T_ * D, t0, n, T_);
            load_tile<T, D>(dOt, dout + bh * T_ * D, t0, n, T_);
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                Lt[i] = lse[bh * T_ + t0 + i];
                Dt[i] = delta[bh * T_ + t0 + i];
            }
            __syncthreads();
            if (!active) continue;
            for (int ii = 0; ii < n; ++ii) {
                if (!visible(key_mask, b, S, T_, t0 + ii, j, causal)) continue;
                T s = 0, dp = 0;
                for (int d = 0; d < D; ++d) {
                    s += Qt[ii * D + d] * kr[d];
                    dp += dOt[ii * D + d] * vr[d];
                }
                const T p = exp_(scale * s - Lt[ii]);  // 0 for a row that saw nothing (lse = +inf)
                const T ds = p * (dp - Dt[ii]);
                for (int d = 0; d < D; ++d) {
                    dvr[d] += p * dOt[ii * D + d];
                    dkr[d] += scale * ds * Qt[ii * D + d];
                }
            }
        }
    }
    if (!active) return;
    for (int d = 0; d < D; ++d) {
        dk[((long)bkv * S + j) * D + d] = dkr[d];
        dv[((long)bkv * S + j) * D + d] = dvr[d];
    }
}

// dQ: grid (ceil(T/BLOCK), B*H), one query row per thread, looping over key tiles. shared: 2 * BLOCK * D * sizeof(T).
template <typename T, int D>
__global__ void flash_backward_dq(const T* q, const T* k, const T* v, const unsigned char* key_mask,
                                  const T* dout, const T* lse, const T* delta, T* dq,
                                  int H, int Hkv, int T_, int S, T scale, int causal) {
    extern __shared__ unsigned char smem[];
    T* Kt = reinterpret_cast<T*>(smem);
    T* Vt = Kt + blockDim.x * D;
    const int BLOCK = blockDim.x;
    const QueryRow row = query_row(H, Hkv, T_, S, D, causal);
    const int b = row.b, bh = row.bh, t = row.t;
    const bool active = row.active;
    const T *kh = k + row.kv, *vh = v + row.kv;
    T qr[D], dor[D], dqr[D];
    for (int d = 0; d < D; ++d) {
        qr[d] = active ? q[((long)bh * T_ + t) * D + d] : (T)0;
        dor[d] = active ? dout[((long)bh * T_ + t) * D + d] : (T)0;
        dqr[d] = 0;
    }
    const T L = active ? lse[(long)bh * T_ + t] : INF_OF(T);
    const T Dr = active ? delta[(long)bh * T_ + t] : (T)0;
    for (int j0 = 0; j0 < row.key_end; j0 += BLOCK) {
        const int n = min(BLOCK, S - j0);
        __syncthreads();
        load_tile<T, D>(Kt, kh, j0, n, S);
        load_tile<T, D>(Vt, vh, j0, n, S);
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < n; ++jj) {
            if (!visible(key_mask, b, S, T_, t, j0 + jj, causal)) continue;
            T s = 0, dp = 0;
            for (int d = 0; d < D; ++d) {
                s += qr[d] * Kt[jj * D + d];
                dp += dor[d] * Vt[jj * D + d];
            }
            const T ds = exp_(scale * s - L) * (dp - Dr);
            for (int d = 0; d < D; ++d) dqr[d] += scale * ds * Kt[jj * D + d];
        }
    }
    if (!active) return;
    for (int d = 0; d < D; ++d) dq[((long)bh * T_ + t) * D + d] = dqr[d];
}
