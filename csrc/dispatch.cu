// Dispatch on the cell to the per-cell instantiations; device queries.
#include <cuda_runtime.h>

#include "cells/gru.cuh"
#include "cells/lstm.cuh"
#include "cells/rnn.cuh"
#include "entry.h"

namespace fusedrnn {

const char* cell_name(Cell c) {
  switch (c) {
    case Cell::LSTM: return "lstm";
    case Cell::GRU: return "gru";
    case Cell::RNN_TANH: return "rnn_tanh";
    case Cell::RNN_RELU: return "rnn_relu";
  }
  return "?";
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
  }
  return "?";
}

template <class F>
static auto by_cell(Cell c, F&& f) {
  switch (c) {
    case Cell::LSTM: return f(LstmCell{});
    case Cell::GRU: return f(GruCell{});
    case Cell::RNN_TANH: return f(RnnTanhCell{});
    default: return f(RnnReluCell{});
  }
}

void forward(const ForwardArgs& a) {
  by_cell(a.cell, [&](auto cell) { forward_cell<decltype(cell)>(a); });
}

void backward(const BackwardArgs& a) {
  by_cell(a.cell, [&](auto cell) { backward_cell<decltype(cell)>(a); });
}

PlanInfo plan(bool backward, Cell cell, DType dtype, int B, int H, int device, Mode mode) {
  return by_cell(cell, [&](auto c) { return plan_cell<decltype(c)>(backward, dtype, B, H, device, mode); });
}

int device_count(std::string* error) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (error) *error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace fusedrnn
