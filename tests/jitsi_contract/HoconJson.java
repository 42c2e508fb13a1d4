// Parses each HOCON file named on the command line with Lightbend Config, the library jicofo and
// the videobridge load their configuration with, resolves it, and prints one JSON line per file:
// {"file": ..., "config": {...}} or {"file": ..., "error": "..."}.
// Run as a single-file program: java -cp config.jar HoconJson.java FILE...
import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import com.typesafe.config.ConfigRenderOptions;
import com.typesafe.config.ConfigValueFactory;
import java.io.File;
import java.util.LinkedHashMap;
import java.util.Map;

public class HoconJson {
    public static void main(String[] args) {
        ConfigParseOptions options = ConfigParseOptions.defaults().setAllowMissing(false);
        for (String path : args) {
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("file", path);
            try {
                Config config = ConfigFactory.parseFile(new File(path), options).resolve();
                line.put("config", config.root().unwrapped());
            } catch (ConfigException e) {
                line.put("error", e.getMessage());
            }
            System.out.println(ConfigValueFactory.fromMap(line).render(ConfigRenderOptions.concise()));
        }
    }
}
