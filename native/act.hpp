// One traits definition per activation: its value, the state it keeps (bits per element and
// the two state planes), G (where an error may pass), f' from the stored state, what is stored
// and how a and a z with the same state are rebuilt from it. The fused epilogue (end of FP),
// the d = grad_a * f'(z) prologue (start of BP) and the z reconstruction (a change of plan
// mode) all read these and nothing else, so an activation is added here (one struct and its
// row in for_act/kActs) plus its row in runtime/constraints.py (docs/ARCHITECTURE.md,
// "The kernels").
//
// Element functions are templates over the lane type V: float (one element) or vf8 (eight, the
// epilogue's vector path), so both paths run the same expression and give the same bits.
#pragma once
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common.hpp"

namespace et {

enum Act { ACT_INPUT = -1, ACT_NONE = 0, ACT_RELU = 1, ACT_CLIP = 2, ACT_HSWISH = 3, ACT_LEAKY = 4, ACT_SIGMOID = 5 };
// What the zeros of an activation mean (docs/ARCHITECTURE.md, "Position constraints"): a
// constrained kind's zeros are structural and its G is known from its state; a dense kind
// keeps dense values and lets every error pass.
enum Kind { KD_INPUT = 0, KD_DENSE = 1, KD_RELU = 2, KD_CLIP0 = 3, KD_HSWISH = 4 };

struct ActParams {
    float alpha = 0.01f, lo = 0.f, hi = 6.f;
};

#if defined(__GNUC__) || defined(__clang__)
typedef i32 vi8 __attribute__((vector_size(32)));
#define ET_LANES8 1
#endif

// Lane helpers: masks are bool for float lanes and all-ones/zero int lanes for vf8.
template <class V>
struct Lanes;
template <>
struct Lanes<float> {
    using M = bool;
    static float splat(float x) { return x; }
    static M none() { return false; }
    static M all() { return true; }
};
// eight lanes' masks as the bits of an unsigned (G from the stored state planes)
template <>
struct Lanes<unsigned> {
    using M = unsigned;
    static M none() { return 0u; }
    static M all() { return 0xffu; }
};
#ifdef ET_LANES8
template <>
struct Lanes<vf8> {
    using M = vi8;
    static vf8 splat(float x) { return vzero8() + x; }
    static M none() { return vi8{}; }
    static M all() { return ~vi8{}; }
};
#endif
template <class V>
using MaskOf = typename Lanes<V>::M;
template <class V>
inline V splat(float x) { return Lanes<V>::splat(x); }

inline bool mask_not(bool m) { return !m; }
#ifdef ET_LANES8
inline vi8 mask_not(vi8 m) { return ~m; }
#endif

// kNaNRule. A NaN pre-activation (an overflowing input, a NaN weight) lies in the region that
// passes values and errors: a = NaN, in A and in G. The state bits and the non-zero test of a
// must agree on every element, because ReLU and ReLU6 lists are decoded from the bits while the
// value offsets count non-zero a: a NaN with state "zero" but a != 0 made the two disagree and
// the kernels read past a row (a segfault in `edgetune info` on a NaN bias). Passing NaN on, as
// the dense engine does, also lets the trainer see a non-finite loss instead of a masked one.
// So every "inside" test is written as "not outside": false for NaN outside, true inside.
template <class V>
inline MaskOf<V> above(V z, float t) { return mask_not(z <= splat<V>(t)); }            // z > t, or NaN
template <class V>
inline MaskOf<V> between(V z, float lo, float hi) { return mask_not((z <= splat<V>(lo)) | (z >= splat<V>(hi))); }

// The stored state of one element is code = s1 + 2 * s2 (bits = 1: s1 only).
struct ReluAct {
    static constexpr int id = ACT_RELU, bits = 1;
    static constexpr bool lanes8 = true;
    static int kind(const ActParams&) { return KD_RELU; }
    template <class V> static V value(V z, const ActParams&) { return above(z, 0.f) ? z : splat<V>(0.f); }
    template <class V> static MaskOf<V> s1(V z, const ActParams&) { return above(z, 0.f); }
    template <class V> static MaskOf<V> s2(V, const ActParams&) { return Lanes<V>::none(); }
    template <class V> static MaskOf<V> g(MaskOf<V> s1, MaskOf<V>, int) { return s1; }
    template <class V> static V stored(V, V a, MaskOf<V>) { return a; }
    static float fprime(int code, float, const ActParams&) { return float(code); }
    static float a_of(float v, int) { return v; }
    static float z_of(float v, int) { return v; }  // a = 0 -> z = 0: state 0 again
};

// Clip(lo, hi); with lo = 0 < hi (ReLU6) it is constrained, any other bounds keep dense values.
struct ClipAct {
    static constexpr int id = ACT_CLIP, bits = 2;
    static constexpr bool lanes8 = true;
    static int kind(const ActParams& p) { return p.lo == 0.f && p.hi > 0.f ? KD_CLIP0 : KD_DENSE; }
    template <class V> static V value(V z, const ActParams& p) {
        const V lo = splat<V>(p.lo), hi = splat<V>(p.hi);
        const V a = z < lo ? lo : z;
        return a > hi ? hi : a;
    }
    // state 1 linear (strictly inside: torch passes no gradient at the bounds), 2 saturated high
    template <class V> static MaskOf<V> s1(V z, const ActParams& p) { return between(z, p.lo, p.hi); }
    template <class V> static MaskOf<V> s2(V z, const ActParams& p) { return z >= splat<V>(p.hi); }
    template <class V> static MaskOf<V> g(MaskOf<V> s1, MaskOf<V>, int) { return s1; }
    template <class V> static V stored(V, V a, MaskOf<V>) { return a; }
    static float fprime(int code, float, const ActParams&) { return code == 1 ? 1.f : 0.f; }
    static float a_of(float v, int) { return v; }
    static float z_of(float v, int) { return v; }  // a = lo -> state 0, a = hi -> state 2
};

// hard-swish value (the one expression FP and every reconstruction use: bit-identical)
template <class V>
inline V hswish_value(V z) {
    const V zero = splat<V>(0.f), six = splat<V>(6.f);
    V t = z + splat<V>(3.f);
    t = t < zero ? zero : t;
    t = six < t ? six : t;
    return z * t / six;
}
static inline float hswish_a(float z) { return hswish_value<float>(z); }

// hard-swish: state 0 z <= -3, 1 curved, 2 z >= 3 (torch: f'(-3) = 0, f'(3) = 1). It stores z
// where curved (a and f' are recomputed from it) and a (= z) in the identity region.
struct HswishAct {
    static constexpr int id = ACT_HSWISH, bits = 2;
    static constexpr bool lanes8 = true;
    static int kind(const ActParams&) { return KD_HSWISH; }
    template <class V> static V value(V z, const ActParams&) { return hswish_value(z); }
    template <class V> static MaskOf<V> s1(V z, const ActParams&) { return between(z, -3.f, 3.f); }
    template <class V> static MaskOf<V> s2(V z, const ActParams&) { return z >= splat<V>(3.f); }
    template <class V> static MaskOf<V> g(MaskOf<V> s1, MaskOf<V> s2, int) { return s1 | s2; }
    template <class V> static V stored(V z, V a, MaskOf<V> s1) { return s1 ? z : a; }
    // curved: z is the stored value; a curved element outside A (a == 0) has z == 0 up to
    // underflow and keeps nothing: its stored value reads as 0, f' = 1/2
    static float fprime(int code, float v, const ActParams&) { return code == 1 ? v / 3.f + 0.5f : code == 2 ? 1.f : 0.f; }
    static float a_of(float v, int code) { return code == 1 ? hswish_a(v) : v; }
    static float z_of(float v, int code) { return code == 0 ? -4.f : v; }
};

struct LeakyAct {
    static constexpr int id = ACT_LEAKY, bits = 1;
    static constexpr bool lanes8 = false;
    static int kind(const ActParams&) { return KD_DENSE; }
    template <class V> static V value(V z, const ActParams& p) { return z > splat<V>(0.f) ? z : z * splat<V>(p.alpha); }
    template <class V> static MaskOf<V> s1(V z, const ActParams&) { return z > splat<V>(0.f); }
    template <class V> static MaskOf<V> s2(V, const ActParams&) { return Lanes<V>::none(); }
    template <class V> static MaskOf<V> g(MaskOf<V>, MaskOf<V>, int) { return Lanes<V>::all(); }
    template <class V> static V stored(V, V a, MaskOf<V>) { return a; }
    static float fprime(int code, float, const ActParams& p) { return code ? 1.f : p.alpha; }
    static float a_of(float v, int) { return v; }
    static float z_of(float v, int) { return v; }
};

struct SigmoidAct {
    static constexpr int id = ACT_SIGMOID, bits = 0;
    static constexpr bool lanes8 = false;  // std::exp: float lanes only
    static int kind(const ActParams&) { return KD_DENSE; }
    template <class V> static V value(V z, const ActParams&) { return 1.f / (1.f + std::exp(-z)); }
    template <class V> static MaskOf<V> s1(V, const ActParams&) { return Lanes<V>::none(); }
    template <class V> static MaskOf<V> s2(V, const ActParams&) { return Lanes<V>::none(); }
    template <class V> static MaskOf<V> g(MaskOf<V>, MaskOf<V>, int) { return Lanes<V>::all(); }
    template <class V> static V stored(V, V a, MaskOf<V>) { return a; }
    static float fprime(int, float a, const ActParams&) { return (1.f - a) * a; }  // from the stored a
    static float a_of(float v, int) { return v; }
    static float z_of(float v, int) { return v; }
};

// No activation (a = z); also a tensor no activation made (ACT_INPUT: its zeros are found once
// by analysing it, and nothing constrains G).
struct NoneAct {
    static constexpr int id = ACT_NONE, bits = 0;
    static constexpr bool lanes8 = true;
    static int kind(const ActParams&) { return KD_DENSE; }
    template <class V> static V value(V z, const ActParams&) { return z; }
    template <class V> static MaskOf<V> s1(V, const ActParams&) { return Lanes<V>::none(); }
    template <class V> static MaskOf<V> s2(V, const ActParams&) { return Lanes<V>::none(); }
    template <class V> static MaskOf<V> g(MaskOf<V>, MaskOf<V>, int) { return Lanes<V>::all(); }
    template <class V> static V stored(V, V a, MaskOf<V>) { return a; }
    static float fprime(int, float, const ActParams&) { return 1.f; }
    static float a_of(float v, int) { return v; }
    static float z_of(float v, int) { return v; }
};

// f(Traits{}) for the activation `act` (ACT_INPUT runs as NoneAct).
template <class F>
inline auto for_act(int act, F&& f) {
    switch (act) {
        case ACT_RELU: return f(ReluAct{});
        case ACT_CLIP: return f(ClipAct{});
        case ACT_HSWISH: return f(HswishAct{});
        case ACT_LEAKY: return f(LeakyAct{});
        case ACT_SIGMOID: return f(SigmoidAct{});
        case ACT_NONE: case ACT_INPUT: return f(NoneAct{});
        default: throw std::invalid_argument("unknown activation code " + std::to_string(act));
    }
}

// The names the bindings accept for each activation (the first is the one edgetune uses).
struct ActName {
    const char* name;
    int id;
};
constexpr ActName kActs[] = {{"none", ACT_NONE},       {"identity", ACT_NONE},   {"relu", ACT_RELU},
                             {"relu6", ACT_CLIP},      {"clip", ACT_CLIP},       {"hardswish", ACT_HSWISH},
                             {"hswish", ACT_HSWISH},   {"leaky_relu", ACT_LEAKY}, {"leakyrelu", ACT_LEAKY},
                             {"sigmoid", ACT_SIGMOID}};

inline int kind_of(int act, float lo, float hi) {
    if (act == ACT_INPUT) return KD_INPUT;
    ActParams p;
    p.lo = lo;
    p.hi = hi;
    return for_act(act, [&](auto T) { return decltype(T)::kind(p); });
}
inline int bits_per_elem(int act) {
    return act == ACT_INPUT ? 0 : for_act(act, [](auto T) { return decltype(T)::bits; });
}
// Is an element with state `code` of an activation of kind `kind` in G?
inline bool in_g_code(int act, int kind, int code) {
    if (kind == KD_DENSE || kind == KD_INPUT) return true;
    return for_act(act, [&](auto T) { return bool(decltype(T)::template g<float>(code & 1, code >> 1, kind)); });
}

}  // namespace et
