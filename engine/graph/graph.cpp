#include "engine/graph/graph.h"

#include <cstring>
#include <sstream>
#include <stdexcept>

namespace tessera {

namespace {

WeightSet::Entry make_entry(std::string name, Tensor t, bool mapped,
                            std::vector<std::string> sources) {
  WeightSet::Entry e;
  e.name = std::move(name);
  e.tensor = std::move(t);
  e.mapped = mapped;
  e.sources = std::move(sources);
  return e;
}

}  // namespace

int WeightSet::add(std::string name, Tensor t, std::vector<std::string> sources) {
  entries.push_back(make_entry(std::move(name), std::move(t), false, std::move(sources)));
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_mapped(std::string name, Tensor t, std::vector<std::string> sources) {
  entries.push_back(make_entry(std::move(name), std::move(t), true, std::move(sources)));
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_rows(std::string name, const Tensor& base, int64_t begin, int64_t count,
                        bool mapped, const Tensor& base_scale, std::vector<std::string> sources) {
  Entry e = make_entry(std::move(name), base.slice(begin, count), mapped, std::move(sources));
  e.base = base;
  e.base_row = begin;
  if (!base_scale.empty()) {
    e.base_scale = base_scale;
    e.scale = base_scale.slice(begin, count);
  }
  entries.push_back(std::move(e));
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_packed(std::string name, kernels::PackedWeights p,
                          std::vector<std::string> sources) {
  Entry e = make_entry(std::move(name), Tensor(), false, std::move(sources));
  e.packed = std::move(p);
  entries.push_back(std::move(e));
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_concat(std::string name, const std::vector<int>& ids) {
  if (ids.empty()) throw Error("internal: '" + name + "' joins no weights");
  std::string names;
  for (int id : ids) names += (names.empty() ? "'" : ", '") + at(id).name + "'";
  auto refuse = [&](const std::string& why) {
    throw Error("cannot join " + names + " into '" + name + "': " + why);
  };
  bool int8 = false, all_int8 = true, same = true;
  int64_t rows = 0;
  const Tensor& first = at(ids[0]).tensor;
  for (int id : ids) {
    const Entry& e = at(id);
    if (e.tensor.empty() || e.tensor.rank() < 1) refuse("'" + e.name + "' holds no tensor");
    if (e.kn_layout) refuse("'" + e.name + "' is stored [K, N]");
    if (e.tensor.rank() != first.rank() || (first.rank() == 2 && e.tensor.dim(1) != first.dim(1)))
      refuse("their widths differ");
    const bool i8 = e.tensor.dtype() == DType::i8;
    int8 = int8 || i8;
    all_int8 = all_int8 && i8;
    same = same && e.tensor.dtype() == first.dtype();
    rows += e.tensor.dim(0);
  }
  if (int8 && !all_int8) refuse("int8 (I8) weights cannot be joined with weights of other dtypes");
  const DType dt = same ? first.dtype() : DType::f32;
  Shape shape = first.shape();
  shape[0] = rows;
  Tensor t(dt, shape, false);
  Tensor scale = int8 ? Tensor(DType::f32, {rows}, false) : Tensor();
  int64_t at_row = 0;
  Entry out;
  for (int id : ids) {
    const Entry& e = at(id);
    const Tensor part = e.tensor.dtype() == dt ? e.tensor : e.tensor.to_f32();
    std::memcpy(static_cast<char*>(t.raw()) + static_cast<size_t>(at_row) * (t.nbytes() / rows),
                part.raw(), part.nbytes());
    if (int8) std::memcpy(scale.data<float>() + at_row, e.scale.raw(), e.scale.nbytes());
    at_row += e.tensor.dim(0);
    out.sources.insert(out.sources.end(), e.sources.begin(), e.sources.end());
    out.exact = out.exact && e.exact;
  }
  out.name = std::move(name);
  out.tensor = std::move(t);
  out.scale = std::move(scale);
  entries.push_back(std::move(out));
  return static_cast<int>(entries.size()) - 1;
}

kernels::PackedWeights pack_weight(const WeightSet::Entry& e, kernels::WeightType type) {
  namespace k = kernels;
  const Tensor& t = e.tensor;
  if (t.rank() != 2) throw Error("weight '" + e.name + "' is not a matrix");
  const int64_t n = e.kn_layout ? t.dim(1) : t.dim(0), k_in = e.kn_layout ? t.dim(0) : t.dim(1);
  const int64_t ld = t.dim(1);
  try {
    switch (t.dtype()) {
      case DType::f32:
        return k::pack_weights_as(t.data<float>(), n, k_in, ld, e.kn_layout, type);
      case DType::bf16:
        if (type == k::WeightType::bf16)
          return k::pack_weights_bf16(t.data<uint16_t>(), n, k_in, ld, e.kn_layout,
                                      k::active_isa());
        return k::pack_weights_as(t.to_f32().data<float>(), n, k_in, ld, e.kn_layout, type);
      case DType::i8:
        if (type != k::WeightType::int8)
          throw Error("weight '" + e.name + "' holds int8 weights (I8); it cannot be packed as " +
                      k::weight_type_name(type));
        if (e.scale.dtype() != DType::f32 || e.scale.numel() != n)
          throw Error("weight '" + e.name + "': its scales are not F32 [" + std::to_string(n) +
                      "]");
        return k::pack_weights_int8(t.data<int8_t>(), e.scale.data<float>(), n, k_in, ld,
                                    e.kn_layout, k::active_isa());
      default:
        break;
    }
  } catch (const std::invalid_argument& x) {
    throw Error("weight '" + e.name + "': " + x.what());
  }
  throw Error("weight '" + e.name + "' has dtype " + dtype_name(t.dtype()) +
              ", which a GEMM cannot take");
}

const char* op_name(Op op) {
  switch (op) {
    case Op::linear:
      return "linear";
    case Op::attention:
      return "attention";
    case Op::layernorm:
      return "layernorm";
    case Op::add:
      return "add";
    case Op::activation:
      return "activation";
    case Op::softmax:
      return "softmax";
    case Op::embedding:
      return "embedding";
    case Op::bias_add:
      return "bias_add";
    case Op::scale:
      return "scale";
    case Op::gather:
      return "gather";
    case Op::add_positions:
      return "add_positions";
    case Op::attention_scores:
      return "attention_scores";
    case Op::attention_context:
      return "attention_context";
    case Op::rnn_cell:
      return "rnn_cell";
    case Op::additive_attention:
      return "additive_attention";
    case Op::constant:
      return "constant";
  }
  return "?";
}

ValueId Graph::add_input(const std::string& name, bool optional) {
  values_.push_back(Value{name, true, optional, false});
  ValueId id = static_cast<ValueId>(values_.size()) - 1;
  inputs_.push_back(id);
  return id;
}

ValueId Graph::add_node(Op op, const std::string& name, std::vector<ValueId> inputs,
                        const NodeAttrs& attrs, const std::string& output_name) {
  values_.push_back(Value{output_name.empty() ? name + ":out" : output_name, false, false, false});
  ValueId out = static_cast<ValueId>(values_.size()) - 1;
  nodes_.push_back(Node{op, name, std::move(inputs), {out}, attrs});
  return out;
}

void Graph::mark_output(ValueId v, const std::string& name) {
  values_.at(static_cast<size_t>(v)).name = name;
  values_.at(static_cast<size_t>(v)).is_output = true;
  outputs_.push_back(v);
}

ValueId Graph::add_value(const std::string& name) {
  values_.push_back(Value{name, false, false, false});
  return static_cast<ValueId>(values_.size()) - 1;
}

std::vector<std::vector<std::pair<int, int>>> Graph::consumers() const {
  std::vector<std::vector<std::pair<int, int>>> c(values_.size());
  for (size_t i = 0; i < nodes_.size(); ++i)
    for (size_t j = 0; j < nodes_[i].inputs.size(); ++j)
      if (nodes_[i].inputs[j] != kNone)
        c[static_cast<size_t>(nodes_[i].inputs[j])].emplace_back(static_cast<int>(i),
                                                                 static_cast<int>(j));
  return c;
}

ValueId Graph::find(const std::string& name) const {
  for (size_t i = 0; i < values_.size(); ++i)
    if (values_[i].name == name) return static_cast<ValueId>(i);
  return kNone;
}

std::string Graph::to_string() const {
  std::ostringstream os;
  auto value_name = [&](ValueId v) { return v == kNone ? std::string("-") : values_[v].name; };
  for (const auto& n : nodes_) {
    os << n.name << "  " << op_name(n.op) << "  (";
    for (size_t i = 0; i < n.inputs.size(); ++i) os << (i ? ", " : "") << value_name(n.inputs[i]);
    os << ") -> ";
    for (size_t i = 0; i < n.outputs.size(); ++i) os << (i ? ", " : "") << value_name(n.outputs[i]);
    os << '\n';
  }
  return os.str();
}

}  // namespace tessera
