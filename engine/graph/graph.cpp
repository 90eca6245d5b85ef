#include "engine/graph/graph.h"

#include <sstream>

namespace tessera {

int WeightSet::add(std::string name, Tensor t) {
  entries.push_back(Entry{std::move(name), std::move(t), {}, false, {}, 0});
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_mapped(std::string name, Tensor t) {
  entries.push_back(Entry{std::move(name), std::move(t), {}, true, {}, 0});
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_rows(std::string name, const Tensor& base, int64_t begin, int64_t count,
                        bool mapped) {
  Entry e{std::move(name), base.slice(begin, count), {}, mapped, base, begin};
  entries.push_back(std::move(e));
  return static_cast<int>(entries.size()) - 1;
}

int WeightSet::add_packed(std::string name, kernels::PackedWeights p) {
  entries.push_back(Entry{std::move(name), Tensor(), std::move(p), false, {}, 0});
  return static_cast<int>(entries.size()) - 1;
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
