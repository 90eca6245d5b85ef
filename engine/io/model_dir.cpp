#include "engine/io/model_dir.h"

#include <filesystem>
#include <fstream>
#include <set>

namespace tessera {

namespace fs = std::filesystem;

namespace {
nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read '" + path + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("'" + path + "' is not valid JSON (" + e.what() + ")");
  }
}
}  // namespace

ModelDir::ModelDir(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) throw Error("model directory '" + dir + "' does not exist");
  const std::string cfg = config_path();
  if (!fs::exists(cfg)) throw Error("model directory '" + dir + "' has no config.json");
  config_ = read_json(cfg);
  if (!config_.is_object()) throw Error("'" + cfg + "' is not a JSON object");

  const std::string single = dir + "/model.safetensors";
  const std::string index = dir + "/model.safetensors.index.json";
  std::vector<std::string> paths;
  if (fs::exists(single)) {
    paths.push_back(single);
  } else if (fs::exists(index)) {
    auto j = read_json(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error("'" + index + "' has no 'weight_map' object");
    std::set<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw Error("'" + index + "': weight_map entry '" + it.key() + "' is not a file name");
      const auto shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == ".." || shard.empty())
        throw Error("'" + index + "': shard name '" + shard + "' is not a plain file name");
      shards.insert(shard);
    }
    for (const auto& s : shards) paths.push_back(dir + "/" + s);
  } else {
    throw Error("model directory '" + dir +
                "' has neither model.safetensors nor model.safetensors.index.json");
  }
  for (const auto& p : paths) {
    files_.push_back(std::make_unique<SafetensorsFile>(p));
    for (const auto& name : files_.back()->names()) {
      auto [it, fresh] = where_.emplace(name, files_.back().get());
      if (!fresh)
        throw Error("tensor '" + name + "' appears in both '" + it->second->path() + "' and '" + p +
                    "'");
    }
  }
}

const SafetensorsFile& ModelDir::file(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    throw Error("model directory '" + dir_ + "' has no tensor '" + name + "'");
  return *it->second;
}

Tensor ModelDir::get(const std::string& name) const {
  return file(name).get(name);
}
DType ModelDir::dtype(const std::string& name) const {
  return file(name).dtype(name);
}
const Shape& ModelDir::shape(const std::string& name) const {
  return file(name).shape(name);
}
const std::string& ModelDir::file_of(const std::string& name) const {
  return file(name).path();
}

std::vector<std::string> ModelDir::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : where_) out.push_back(name);
  return out;
}

std::vector<std::string> ModelDir::weight_files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  const std::string index = dir_ + "/model.safetensors.index.json";
  if (!fs::exists(dir_ + "/model.safetensors") && fs::exists(index)) out.push_back(index);
  return out;
}

uint64_t ModelDir::weight_file_bytes() const {
  uint64_t total = 0;
  for (const auto& f : files_) total += f->file_size();
  return total;
}

namespace {
std::string key_error(const std::string& cfg, const std::string& key, const char* expected) {
  return "'" + cfg + "': key '" + key + "' must be " + expected;
}
}  // namespace

int64_t ModelDir::get_int(const std::string& key) const {
  if (!config_.contains(key)) throw Error("'" + config_path() + "' has no key '" + key + "'");
  const auto& v = config_[key];
  if (!v.is_number_integer()) throw Error(key_error(config_path(), key, "an integer"));
  return v.get<int64_t>();
}

int64_t ModelDir::get_int(const std::string& key, int64_t fallback) const {
  if (!config_.contains(key) || config_[key].is_null()) return fallback;
  return get_int(key);
}

double ModelDir::get_float(const std::string& key, double fallback) const {
  if (!config_.contains(key) || config_[key].is_null()) return fallback;
  const auto& v = config_[key];
  if (!v.is_number()) throw Error(key_error(config_path(), key, "a number"));
  return v.get<double>();
}

bool ModelDir::get_bool(const std::string& key, bool fallback) const {
  if (!config_.contains(key) || config_[key].is_null()) return fallback;
  const auto& v = config_[key];
  if (!v.is_boolean()) throw Error(key_error(config_path(), key, "true or false"));
  return v.get<bool>();
}

std::string ModelDir::get_string(const std::string& key, const std::string& fallback) const {
  if (!config_.contains(key) || config_[key].is_null()) return fallback;
  const auto& v = config_[key];
  if (!v.is_string()) throw Error(key_error(config_path(), key, "a string"));
  return v.get<std::string>();
}

}  // namespace tessera
