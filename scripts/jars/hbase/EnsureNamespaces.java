// Creates the HBase namespaces named on the command line when they are missing.
// Thrift1 (happybase) cannot create namespaces, and createTable("ns:t") fails with
// NamespaceNotFoundException, so scripts/hbase.sh runs this once per data directory:
//   java -cp "CONF_DIR:LIBS/*" EnsureNamespaces.java imflow
// (single-file source launch: needs only the JRE, whose module image has jdk.compiler).
// The HBase connection settings come from hbase-site.xml in CONF_DIR.

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.NamespaceDescriptor;
import org.apache.hadoop.hbase.NamespaceExistException;
import org.apache.hadoop.hbase.NamespaceNotFoundException;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;

public class EnsureNamespaces {
  public static void main(String[] args) throws Exception {
    Configuration conf = HBaseConfiguration.create();
    try (Connection conn = ConnectionFactory.createConnection(conf);
        Admin admin = conn.getAdmin()) {
      for (String ns : args) {
        try {
          admin.getNamespaceDescriptor(ns);
          System.out.println("namespace " + ns + ": exists");
        } catch (NamespaceNotFoundException missing) {
          try {
            admin.createNamespace(NamespaceDescriptor.create(ns).build());
            System.out.println("namespace " + ns + ": created");
          } catch (NamespaceExistException raced) {
            System.out.println("namespace " + ns + ": exists");
          }
        }
      }
    }
  }
}
