#include "models/model.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "models/bert.h"
#include "models/gpt2.h"
#include "models/rnn_attention.h"
#include "models/transformer.h"

namespace tessera::models {

namespace {

// The `transformer` family behind the common interface (TransformerModel predates it).
class TransformerFamily final : public Model {
 public:
  TransformerFamily(const ModelDir& dir, const LoadOptions& o) : m_(dir, o) {}
  const char* family() const override { return "transformer"; }
  TensorMap run(const TensorMap& inputs, NodeObserver* observer) const override {
    return m_.run(inputs, observer);
  }
  const Graph& forward_graph() const override { return m_.forward_graph(); }
  GraphSession& forward_session() const override { return m_.forward_session(); }
  const std::vector<passes::Stats>& pass_stats() const override { return m_.pass_stats(); }
  const TransformerModel* transformer() const override { return &m_; }

 private:
  TransformerModel m_;
};

}  // namespace

std::unique_ptr<Model> load_model(const ModelDir& dir, const LoadOptions& o) {
  const std::string type = dir.get_string("model_type", "");
  if (type == "transformer") return std::make_unique<TransformerFamily>(dir, o);
  if (type == "gpt2") return std::make_unique<Gpt2Model>(dir, o);
  if (type == "bert") return std::make_unique<BertModel>(dir, o);
  if (type == "rnn_attention") return std::make_unique<RnnAttentionModel>(dir, o);
  throw Error("'" + dir.config_path() + "': model_type '" + type +
              "' is not supported (supported: transformer, gpt2, bert, rnn_attention)");
}

namespace hf {

CheckpointReader::CheckpointReader(const ModelDir& dir, const std::string& prefix,
                                   std::string summary)
    : dir_(dir), summary_(std::move(summary)) {
  for (const auto& n : dir.names())
    if (n.rfind(prefix, 0) == 0) {
      prefix_ = prefix;
      break;
    }
}

std::string CheckpointReader::resolve(const std::string& name) const {
  std::vector<std::string> candidates{name};
  // Old TensorFlow-converted BERT checkpoints name LayerNorm parameters gamma/beta.
  const std::string w = "LayerNorm.weight", b = "LayerNorm.bias";
  if (name.size() >= w.size() && name.compare(name.size() - w.size(), w.size(), w) == 0)
    candidates.push_back(name.substr(0, name.size() - w.size()) + "LayerNorm.gamma");
  if (name.size() >= b.size() && name.compare(name.size() - b.size(), b.size(), b) == 0)
    candidates.push_back(name.substr(0, name.size() - b.size()) + "LayerNorm.beta");
  for (const auto& c : candidates) {
    if (!prefix_.empty() && dir_.has(prefix_ + c)) return prefix_ + c;
    if (dir_.has(c)) return c;
  }
  return "";
}

std::string CheckpointReader::stored_name(const std::string& name) const {
  const std::string r = resolve(name);
  return r.empty() ? prefix_ + name : r;
}

Tensor CheckpointReader::get(const std::string& name, const Shape& expected, bool* mapped) {
  const std::string real = resolve(name);
  if (real.empty())
    throw Error("model directory '" + dir_.dir() + "' has no tensor '" + prefix_ + name +
                "' (required by config.json: " + summary_ + ")");
  used_.insert(real);
  StoredWeight w =
      read_weight(dir_, real, expected, summary_, Want::f32, kernels::WeightType::f32, false);
  if (mapped) *mapped = w.mapped;
  return w.tensor;
}

StoredWeight CheckpointReader::read(const std::string& name, const Shape& expected,
                                    kernels::WeightType gemm_type, bool kn) {
  const std::string real = resolve(name);
  if (real.empty())
    throw Error("model directory '" + dir_.dir() + "' has no tensor '" + prefix_ + name +
                "' (required by config.json: " + summary_ + ")");
  used_.insert(real);
  StoredWeight w = read_weight(dir_, real, expected, summary_, Want::gemm, gemm_type, kn);
  if (w.tensor.dtype() == DType::i8) used_.insert(scale_name(real));
  return w;
}

int CheckpointReader::add_copy(WeightSet& ws, const std::string& name, const Shape& expected) {
  bool mapped = false;
  Tensor t = get(name, expected, &mapped);
  const std::string real = resolve(name);
  if (!mapped) return ws.add(name, std::move(t), {real});
  Tensor copy(DType::f32, t.shape(), false);
  std::memcpy(copy.raw(), t.raw(), t.nbytes());
  return ws.add(name, std::move(copy), {real});
}

int CheckpointReader::add(WeightSet& ws, const std::string& name, const Shape& expected, bool kn) {
  StoredWeight w = read(name, expected, ws.gemm_type, kn);
  return add_weight(ws, name, std::move(w), resolve(name), kn);
}

void CheckpointReader::check_all_used(
    const std::function<bool(const std::string&)>& ignorable) const {
  for (const auto& name : dir_.names()) {
    if (used_.count(name)) continue;
    const std::string bare =
        !prefix_.empty() && name.rfind(prefix_, 0) == 0 ? name.substr(prefix_.size()) : name;
    if (ignorable && ignorable(bare)) continue;
    throw Error("'" + dir_.file_of(name) + "': unexpected tensor '" + name +
                "' (not part of a model with " + summary_ + ")");
  }
}

std::string describe(const Tensor& t) {
  return std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape());
}

namespace {
std::string format_value(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace

Tensor key_padding_from_attention_mask(const Tensor& m, const std::string& name, int64_t batch,
                                       int64_t len) {
  const DType dt = m.dtype();
  const bool ok_dtype = dt == DType::boolean || dt == DType::u8 || dt == DType::i32 ||
                        dt == DType::i64 || dt == DType::f32;
  if (!ok_dtype || m.shape() != Shape{batch, len})
    throw Error("input '" + name + "' must be I64, I32, U8, BOOL or F32 " +
                shape_str(Shape{batch, len}) + " (1 = token, 0 = padding), got " + describe(m));
  Tensor pad(DType::u8, {batch, len});
  uint8_t* out = pad.data<uint8_t>();
  for (int64_t i = 0; i < m.numel(); ++i) {
    double v = 0;
    switch (dt) {
      case DType::boolean:
      case DType::u8:
        v = m.data<uint8_t>()[i];
        break;
      case DType::i32:
        v = m.data<int32_t>()[i];
        break;
      case DType::i64:
        v = static_cast<double>(m.data<int64_t>()[i]);
        break;
      default:
        v = m.data<float>()[i];
        break;
    }
    if (v != 0 && v != 1)
      throw Error("input '" + name + "': value " + format_value(v) + " at [" +
                  std::to_string(i / len) + ", " + std::to_string(i % len) +
                  "] is neither 0 (padding) nor 1 (token)");
    out[i] = v == 0 ? 1 : 0;
  }
  return pad;
}

void check_ids(const Tensor& t, const std::string& name, int64_t batch, int64_t limit,
               const std::string& limit_name) {
  if (t.dtype() != DType::i64 || t.rank() != 2 || (batch >= 0 && t.dim(0) != batch))
    throw Error("input '" + name + "' must be I64 [" + (batch >= 0 ? std::to_string(batch) : "B") +
                ", T], got " + describe(t));
  const int64_t* p = t.data<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (p[i] < 0 || p[i] >= limit)
      throw Error("input '" + name + "': id " + std::to_string(p[i]) + " at [" +
                  std::to_string(i / t.dim(1)) + ", " + std::to_string(i % t.dim(1)) +
                  "] is out of range for " + limit_name + " " + std::to_string(limit));
}

void check_names(const TensorMap& in, const std::vector<std::string>& allowed,
                 const std::vector<std::string>& required) {
  std::string expected;
  for (const auto& n : allowed) expected += (expected.empty() ? "" : ", ") + n;
  for (const auto& [name, t] : in) {
    bool known = false;
    for (const auto& a : allowed) known = known || a == name;
    if (!known) throw Error("unknown input '" + name + "' (this model takes: " + expected + ")");
  }
  for (const auto& r : required)
    if (!in.count(r)) throw Error("missing input '" + r + "' (this model takes: " + expected + ")");
}

}  // namespace hf

}  // namespace tessera::models
