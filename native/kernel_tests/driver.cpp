// Kernel test driver: runs FP, BP and WG of the real conv/gemm kernels on a golden case
// (tests/golden/*.etg, written by tests/kernel_goldens.py from the dense numpy reference) and
// compares every output with the reference. No Python, no pybind11: this is how the kernels
// are tested where Python is not at hand, e.g. the NEON build under qemu-aarch64.
//
//   et_kernel_tests FILE.etg...      exit status 0 when every case passes
//
// Each case runs in sparse and in dense mode of the kernels, on one thread and on three (the
// pixel partitions differ), the way edgetune.runtime drives them through native/bindings.cpp:
// the input info comes from the previous layer's activation, backward masks g_in by its G.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../conv.hpp"

using namespace et;

namespace {

struct Tensor {
    std::vector<int> shape;
    std::vector<float> v;
};

struct Case {
    std::string name, kind, act, in_act;
    int C = 0, K = 0, R = 0, S = 0, sh = 0, sw = 0, pt = 0, pl = 0, pb = 0, pr = 0, dh = 0, dw = 0, groups = 0;
    std::map<std::string, Tensor> t;
    const Tensor& at(const std::string& k) const {
        auto it = t.find(k);
        if (it == t.end()) throw std::runtime_error(name + ": no tensor " + k);
        return it->second;
    }
};

bool little_endian() {
    const u32 one = 1;
    u8 b;
    std::memcpy(&b, &one, 1);
    return b == 1;
}

// The .etg format: text header lines up to "data", then the float32 (little-endian) values of
// every tensor in header order (tests/kernel_goldens.py documents it).
Case load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    Case c;
    std::vector<std::string> order;
    std::string line;
    if (!std::getline(f, line) || line != "ETGOLDEN 1") throw std::runtime_error(path + ": not an ETGOLDEN 1 file");
    while (std::getline(f, line) && line != "data") {
        std::istringstream in(line);
        std::string key;
        in >> key;
        if (key == "case") {
            in >> c.name;
        } else if (key == "layer") {
            in >> c.kind >> c.C >> c.K >> c.R >> c.S >> c.sh >> c.sw >> c.pt >> c.pl >> c.pb >> c.pr >> c.dh >> c.dw >>
                c.groups >> c.act >> c.in_act;
        } else if (key == "tensor") {
            std::string name;
            int nd = 0;
            in >> name >> nd;
            Tensor& t = c.t[name];
            t.shape.resize(nd);
            size_t n = 1;
            for (int& d : t.shape) { in >> d; n *= size_t(d); }
            t.v.resize(n);
            order.push_back(name);
        }
        if (!in) throw std::runtime_error(path + ": bad header line '" + line + "'");
    }
    if (line != "data") throw std::runtime_error(path + ": no data line");
    for (const auto& name : order) {
        Tensor& t = c.t[name];
        f.read(reinterpret_cast<char*>(t.v.data()), std::streamsize(t.v.size() * sizeof(float)));
        if (!f) throw std::runtime_error(path + ": truncated at tensor " + name);
    }
    if (f.peek() != std::char_traits<char>::eof()) throw std::runtime_error(path + ": bytes after the last tensor");
    return c;
}

int act_code(const std::string& s) {
    if (s == "relu") return ACT_RELU;
    if (s == "relu6") return ACT_CLIP;
    if (s == "hardswish") return ACT_HSWISH;
    throw std::runtime_error("unknown activation " + s);
}

// Tolerance: 1e-5 of the element's sum of |terms| (the reference on absolute values, stored as
// <name>_scale). Reordering a float32 sum of n terms changes it by at most about n * 2^-24 of
// that sum; the largest reduction here has fewer than 150 terms (BP of conv3x3: 16 outputs x 9 taps),
// so 150 * 6e-8 = 9e-6 < 1e-5, with the float64 reference's own rounding to float32 (0.5 ulp)
// on top. The inputs are dyadic, so most outputs are exact and the error there is zero. In the
// cases fed by hard-swish, z is not exact and its rounding also enters d = grad_a * f'(z) (f'
// has slope 1/3 there); the goldens keep z well off the kinks, and that term is orders of
// magnitude below the bound in practice (every level and arm64 pass).
constexpr double kTol = 1e-5;

bool check(const std::string& what, const float* got, const Tensor& ref, const Tensor& scale) {
    size_t bad = 0, at = 0;
    double worst = -1;
    for (size_t i = 0; i < ref.v.size(); i++) {
        const double err = std::fabs(double(got[i]) - double(ref.v[i]));
        const double lim = kTol * double(scale.v[i]);
        if (err <= lim) continue;  // (false for NaN)
        bad++;
        const double r = std::isnan(err) ? INFINITY : err / (lim + 1e-30);
        if (r > worst) { worst = r; at = i; }
    }
    if (!bad) return true;
    std::printf("    FAIL %s: %zu of %zu elements off; worst: element %zu got %.9g want %.9g (limit %.3g)\n", what.c_str(),
                bad, ref.v.size(), at, got[at], ref.v[at], kTol * scale.v[at]);
    return false;
}

// One run of the layer: FP, then BP and WG. Returns whether every output matches.
bool run(const Case& c, bool dense, int threads) {
    set_pool_threads(threads);
    const Tensor& z_in = c.at("z_in");
    const int N = z_in.shape[0];
    const int H = c.kind == "gemm" ? 1 : z_in.shape[1], W = c.kind == "gemm" ? 1 : z_in.shape[2];
    ConvLayer L(c.C, c.K, c.R, c.S, c.sh, c.sw, c.pt, c.pl, c.pb, c.pr, c.dh, c.dw, c.groups, act_code(c.act), 0.01f, 0.f,
                6.f);
    L.set_weights(c.at("w").v.data(), c.at("b").v.data());
    // the input as the previous layer's fused activation leaves it (values, lists, G states)
    InfoPtr x = activate_rows(z_in.v.data(), nullptr, N, H, W, c.C, act_code(c.in_act), 0.01f, 0.f, 6.f, dense);
    std::vector<float> a(c.at("a").v.size()), g_in(z_in.v.size()), dW(c.at("dw").v.size()), db(c.K);
    L.forward(x, dense, a.data());
    L.backward(c.at("grad_a").v.data(), g_in.data(), x.get(), dW.data(), db.data());
    bool ok = true;
    ok &= check("FP a", a.data(), c.at("a"), c.at("a_scale"));
    ok &= check("BP g_in", g_in.data(), c.at("g_in"), c.at("g_in_scale"));
    ok &= check("WG dW", dW.data(), c.at("dw"), c.at("dw_scale"));
    ok &= check("WG db", db.data(), c.at("db"), c.at("db_scale"));
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE.etg...\n", argv[0]);
        return 2;
    }
    if (!little_endian()) {
        std::fprintf(stderr, "the golden files are little-endian; this target is not\n");
        return 2;
    }
    std::printf("kernels: %s, %d floats per vector\n", simd_isa(), VW);
#ifdef ET_EXPECT_ISA  // a level build (not -march=native) must run that level's vectors
    if (std::string(simd_isa()) != ET_EXPECT_ISA) {
        std::printf("FAIL: built for the %s level but the vectors are %s\n", ET_EXPECT_ISA, simd_isa());
        return 1;
    }
#endif
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        try {
            const Case c = load(argv[i]);
            for (bool dense : {false, true})
                for (int threads : {1, 3}) {
                    const bool ok = run(c, dense, threads);
                    std::printf("%s %s %s threads=%d\n", ok ? "ok  " : "FAIL", c.name.c_str(), dense ? "dense " : "sparse",
                                threads);
                    failed += !ok;
                }
        } catch (const std::exception& e) {
            std::printf("FAIL %s: %s\n", argv[i], e.what());
            failed++;
        }
    }
    return failed ? 1 : 0;
}
