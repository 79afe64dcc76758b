// Host builds of the per-cell pointwise headers (csrc/cells/*.cuh), for the tests: the exact
// cell math the kernels run, checkable against torch autograd without a GPU
// (tests/test_cuda_cells.py), and the gates / saved slots / c state each cell struct carries.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <tuple>
#include <vector>

#include "cells/gru.cuh"
#include "cells/gru_reset_before.cuh"
#include "cells/lstm.cuh"
#include "cells/rnn.cuh"
#include "selftest.h"

namespace fusedrnn {

namespace {

template <class C>
std::tuple<float, float, std::vector<float>> fwd(const std::vector<float>& gx, const std::vector<float>& gh,
                                                 float h_prev, float c_prev) {
  if (gx.size() != C::G || gh.size() != C::G)
    throw std::invalid_argument("cell_forward: gx and gh need " + std::to_string(C::G) + " values");
  float h, c;
  std::vector<float> save(C::S);
  C::forward(gx.data(), gh.data(), h_prev, c_prev, &h, &c, save.data());
  return {h, c, save};
}

template <class C>
pybind11::dict facts() {
  pybind11::dict d;
  d["gates"] = C::G; d["saved"] = C::S; d["has_c"] = C::HAS_C;
  return d;
}

template <class C>
std::tuple<std::vector<float>, std::vector<float>, float, float> bwd(const std::vector<float>& save, float dh,
                                                                     float dc) {
  if (save.size() != C::S) throw std::invalid_argument("cell_backward: save needs " + std::to_string(C::S) + " values");
  std::vector<float> dgx(C::G), dgh(C::G);
  float dl, dcp;
  C::backward(save.data(), dh, dc, dgx.data(), dgh.data(), &dl, &dcp);
  return {dgx, dgh, dl, dcp};
}

}  // namespace

void bind_host_cells(pybind11::module_& m) {
  m.def(
      "cell_forward",
      [](const std::string& cell, const std::vector<float>& gx, const std::vector<float>& gh, float h_prev,
         float c_prev) {
        if (cell == "lstm") return fwd<LstmCell>(gx, gh, h_prev, c_prev);
        if (cell == "gru") return fwd<GruCell>(gx, gh, h_prev, c_prev);
        if (cell == "rnn_tanh") return fwd<RnnTanhCell>(gx, gh, h_prev, c_prev);
        if (cell == "rnn_relu") return fwd<RnnReluCell>(gx, gh, h_prev, c_prev);
        throw std::invalid_argument("unknown cell " + cell);
      },
      "Host build of csrc/cells/<cell>.cuh forward: (gx[G], gh[G], h_prev, c_prev) -> (h, c, save[S])");
  m.def(
      "cell_backward",
      [](const std::string& cell, const std::vector<float>& save, float dh, float dc) {
        if (cell == "lstm") return bwd<LstmCell>(save, dh, dc);
        if (cell == "gru") return bwd<GruCell>(save, dh, dc);
        if (cell == "rnn_tanh") return bwd<RnnTanhCell>(save, dh, dc);
        if (cell == "rnn_relu") return bwd<RnnReluCell>(save, dh, dc);
        throw std::invalid_argument("unknown cell " + cell);
      },
      "Host build of csrc/cells/<cell>.cuh backward: (save[S], dh, dc) -> (d_gx[G], d_gh[G], dh_local, dc_prev)");
  m.def(
      "cell_structs",
      []() {
        pybind11::dict d;
        d[LstmCell::name] = facts<LstmCell>();
        d[GruCell::name] = facts<GruCell>();
        d[RnnTanhCell::name] = facts<RnnTanhCell>();
        d[RnnReluCell::name] = facts<RnnReluCell>();
        d[GruResetBeforeCell::name] = facts<GruResetBeforeCell>();
        return d;
      },
      "What each struct of csrc/cells/*.cuh compiles to: {name: {gates, saved, has_c}}");
}

}  // namespace fusedrnn
