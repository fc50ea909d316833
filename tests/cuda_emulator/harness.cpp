// C entry points around the emulated kernels, one per (kernel, dtype, head dim) the tests use; loaded with ctypes.
#include "emulator.h"
#include "../../llmscratch/kernels/cuda/attention.cu"

using u8 = unsigned char;

#define LAUNCHERS(T, SUFFIX, D)                                                                                   \
    extern "C" void softmax_forward_##SUFFIX(unsigned rows, unsigned threads, const T* s, T* p, const u8* m,       \
                                             int H, int T_, int S, T scale, int causal) {                          \
        launch(dim3{rows, 1, 1}, dim3{threads, 1, 1}, softmax_forward<T>, s, p, m, H, T_, S, scale, causal);       \
    }                                                                                                             \
    extern "C" void softmax_backward_##SUFFIX(unsigned rows, unsigned threads, const T* p, const T* dp, T* ds,     \
                                              int S, T scale) {                                                   \
        launch(dim3{rows, 1, 1}, dim3{threads, 1, 1}, softmax_backward<T>, p, dp, ds, S, scale);                   \
    }                                                                                                             \
    extern "C" void flash_forward_##SUFFIX##_d##D(unsigned gx, unsigned gy, unsigned threads, const T* q,         \
                                                  const T* k, const T* v, const u8* m, T* out, T* lse, int H,      \
                                                  int Hkv, int T_, int S, T scale, int causal) {                   \
        launch(dim3{gx, gy, 1}, dim3{threads, 1, 1}, flash_forward<T, D>, q, k, v, m, out, lse, H, Hkv, T_, S,     \
               scale, causal);                                                                                    \
    }                                                                                                             \
    extern "C" void flash_backward_dkdv_##SUFFIX##_d##D(unsigned gx, unsigned gy, unsigned threads, const T* q,   \
                                                        const T* k, const T* v, const u8* m, const T* dout,        \
                                                        const T* lse, const T* delta, T* dk, T* dv, int H, int Hkv, \
                                                        int T_, int S, T scale, int causal) {                      \
        launch(dim3{gx, gy, 1}, dim3{threads, 1, 1}, flash_backward_dkdv<T, D>, q, k, v, m, dout, lse, delta, dk,  \
               dv, H, Hkv, T_, S, scale, causal);                                                                 \
    }                                                                                                             \
    extern "C" void flash_backward_dq_##SUFFIX##_d##D(unsigned gx, unsigned gy, unsigned threads, const T* q,     \
                                                      const T* k, const T* v, const u8* m, const T* dout,          \
                                                      const T* lse, const T* delta, T* dq, int H, int Hkv, int T_,  \
                                                      int S, T scale, int causal) {                                \
        launch(dim3{gx, gy, 1}, dim3{threads, 1, 1}, flash_backward_dq<T, D>, q, k, v, m, dout, lse, delta, dq, H, \
               Hkv, T_, S, scale, causal);                                                                        \
    }

LAUNCHERS(double, f64, 16)
LAUNCHERS(float, f32, 16)
