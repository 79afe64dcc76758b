// The cells' facts, once for all of csrc/: id, name, gates G, fp32 values S the forward
// kernel saves per (t, b, unit) for the backward one, and whether the cell carries a c
// state. The per-cell headers (cells/*.cuh), the argument checks and the plan read them
// from here; tests/test_cell_table.py checks them against the Python cell table.
#pragma once

namespace fusedrnn {

enum class Cell : int { LSTM = 0, GRU = 1, RNN_TANH = 2, RNN_RELU = 3, GRU_RESET_BEFORE = 4 };

struct CellInfo {
  Cell id;
  const char* name;
  int gates, saved;
  bool has_c;
};

constexpr CellInfo kCells[] = {
    {Cell::LSTM, "lstm", 4, 5, true},          // i, f, g, o; saves i, f, g, o, c_prev
    {Cell::GRU, "gru", 3, 5, false},           // r, z, n; saves r, z, n, W_hn h + b_hn, h_prev
    {Cell::RNN_TANH, "rnn_tanh", 1, 1, false},  // saves h
    {Cell::RNN_RELU, "rnn_relu", 1, 1, false},
    // fusedrnn.GRU(reset_after=False): n = tanh(gx_n + W_hn (r ⊙ h) + b_hn); saves r, z, n, h_prev
    {Cell::GRU_RESET_BEFORE, "gru_reset_before", 3, 4, false},
};
constexpr int kNumCells = sizeof(kCells) / sizeof(kCells[0]);

constexpr const CellInfo& cell_info(Cell c) { return kCells[static_cast<int>(c)]; }

static_assert(kCells[0].id == Cell::LSTM && kCells[1].id == Cell::GRU && kCells[2].id == Cell::RNN_TANH &&
                  kCells[3].id == Cell::RNN_RELU && kCells[4].id == Cell::GRU_RESET_BEFORE,
              "kCells is indexed by Cell");

}  // namespace fusedrnn
