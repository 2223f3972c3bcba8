// Sparse conv / gemm layer: FP with input sparsity, BP with sparse error and
// output sparsity, WG over (a non-zero, d in G) pairs. Gemm is the 1x1 conv on
// a 1x1 image (rows = pixels). The phases live in native/conv/*.cpp, one file per kernel
// family (list walks, register-tiled micro-kernels, depthwise), chosen per layer and phase
// in native/conv/layer.cpp.
#pragma once
#include "info.hpp"

namespace et {

struct ConvLayer {
    // geometry
    int C, K, R, S, sh, sw, pt, pl, pb, pr, dh, dw, groups;
    int Cg, Kg, Kp, Cp, KpAll;
    bool depthwise, pointwise;
    int act;
    float alpha, lo, hi;
    bool trainable = true;
    bool has_bias = false, has_w = false;
    // packed weights (copied by set_weights)
    ABuf<float> Wf;    // [g][R][S][Cg][Kp]   FP
    ABuf<float> Wb;    // [g][R][S][Kg][Cp]   BP
    ABuf<float> bias;  // [g][Kp]
    // panels of the register-tiled kernels (native/ukernels/): per group and block of nr output
    // vectors, rows [tap][reduction channel] of nr*VW floats
    ABuf<float> Wt;   // FP: blocks over Kp, rows (tap, c)
    ABuf<float> Wbt;  // BP: blocks over Cp, rows (tap, k)
    // state of the last forward
    InfoPtr in, out;
    bool dense = false;
    // optional dense copy of the input (the producer's a, N*H*W*C), valid during forward only:
    // depthwise FP reads it instead of expanding the lists
    const float* x_dense = nullptr;
    int N = 0, H = 0, W = 0, OH = 0, OW = 0;
    Counts cfp, cbp, cwg;  // last call
    Counts tfp, tbp, twg;  // cumulative
    double ms_fp = 0, ms_bp = 0, ms_wg = 0;     // wall time of the last forward / backward phases
    double cpu_fp = 0, cpu_bp = 0, cpu_wg = 0;  // their CPU time, summed over the threads
    // the kernel family each phase of the last call ran: "tiled", "walk", "im2col", "depthwise"
    const char* kern_fp = "";
    const char* kern_bp = "";
    const char* kern_wg = "";

    ConvLayer(int C, int K, int R, int S, int sh, int sw, int pt, int pl, int pb, int pr, int dh, int dw,
              int groups, int act, float alpha, float lo, float hi);
    void set_weights(const float* w_oihw, const float* b);
    void out_shape(int H, int W, int& OH, int& OW) const;
    // Runs FP. a_out (N,OH,OW,K) may be null. Returns the output info, built
    // in dense mode (no lists) when dense or out_dense.
    // keep_values=false: no consumer reads the output's values from its plan (see ActInfo::has_values).
    InfoPtr forward(const InfoPtr& x, bool dense, float* a_out, bool out_dense = false, bool keep_values = true);
    // BP/WG. grad_a: (N,OH,OW,K). g_in (N,H,W,C) written when non-null.
    // prevG: info whose G masks g_in (null: no mask). dW: OIHW, db: K.
    void backward(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db);
    // Drop what the last step kept (input and output infos, the dense input copy).
    void release() { in.reset(); out.reset(); x_dense = nullptr; }
    int tile_px() const;
    // f(r, s, p) for every tap of output pixel (n, oh, ow) that lands inside the input; p is the input pixel
    template <class F>
    inline void each_tap(int n, int oh, int ow, F&& f) const {
        for (int r = 0; r < R; r++) {
            const int ih = oh * sh - pt + r * dh;
            if ((unsigned)ih >= (unsigned)H) continue;
            for (int s = 0; s < S; s++) {
                const int iw = ow * sw - pl + s * dw;
                if ((unsigned)iw >= (unsigned)W) continue;
                f(r, s, ((i64)n * H + ih) * W + iw);
            }
        }
    }

    // the phase files' entry points (native/conv/*.cpp)
    void pack_tiles(const float* w);
    void fp_tiled(const InfoPtr& x, Epi& E);
    void bp_tiled(const float* D, float* g_in, const ActInfo* prevG);
    i64 wg_tiled(const float* D, const i32* gc, float* dWp);
    void fp_walk(const InfoPtr& x, Epi& E);
    void fp_depthwise(const InfoPtr& x, Epi& E);
    void bwd_general(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db);
    void grad_prologue(const float* grad_a, const RowView& GV, float* D, float* dvals, float* db);
    void bp_walk(const RowView& GV, const float* dvals, const i32* gc, float* g_in, const ActInfo* prevG);
    void wg_phase(const float* D, const i32* gc, float* dW);
    i64 wg_walk(const float* D, const i32* gc, float* dWp);
    void store_dw(const float* packed, float* dW) const;
    void bwd_depthwise(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db);
    i64 dense_macs() const;
    bool wg_geo(TGeo& G) const;
    i64 wg_required(const i32* gc);
    void phase_times(double t0, double t1, double t2, double t3, bool bp);
    bool wg_by_im2col() const;
    i64 wg_im2col(const float* D, float* dWp);
};

}  // namespace et
