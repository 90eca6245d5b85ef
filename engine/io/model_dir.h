// A model directory: config.json + model.safetensors (or HF-style shards listed in
// model.safetensors.index.json), plus whatever tokenizer files the family uses.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"

namespace tessera {

class ModelDir {
 public:
  // Reads and parses config.json and opens (maps and validates) every weight file.
  explicit ModelDir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  std::string config_path() const { return dir_ + "/config.json"; }

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // Zero-copy view; throws Error naming the directory if absent.
  Tensor get(const std::string& name) const;
  DType dtype(const std::string& name) const;
  const Shape& shape(const std::string& name) const;
  // The file holding `name` (for error messages).
  const std::string& file_of(const std::string& name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  uint64_t weight_file_bytes() const;
  // The weight files (model.safetensors, or the shards), and the index when sharded.
  std::vector<std::string> weight_files() const;

  // Config accessors with errors naming config.json and the key.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

 private:
  const SafetensorsFile& file(const std::string& name) const;

  std::string dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

}  // namespace tessera
