// Prints a running Kafka broker's request counts by API as one JSON object, e.g.
// {"Produce":5236,"Fetch":3645,"EndTxn":885,...}; `bench.breakdown --kafka-requests`
// reads it before and after a run to tell which requests the pipeline makes per message.
//
//     java bench/jmx/KafkaRequests.java <broker pid>
//
// It attaches to the broker's JVM through the local attach API (the same user, no network
// port) and starts the JVM's local management agent if it is not running yet.
import com.sun.tools.attach.VirtualMachine;
import java.util.TreeMap;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class KafkaRequests {
  public static void main(String[] args) throws Exception {
    VirtualMachine vm = VirtualMachine.attach(args[0]);
    String address;
    try {
      address = vm.startLocalManagementAgent();
    } finally {
      vm.detach();
    }
    try (JMXConnector connector = JMXConnectorFactory.connect(new JMXServiceURL(address))) {
      MBeanServerConnection server = connector.getMBeanServerConnection();
      TreeMap<String, Long> counts = new TreeMap<>();
      ObjectName pattern =
          new ObjectName("kafka.network:type=RequestMetrics,name=RequestsPerSec,*");
      for (ObjectName name : server.queryNames(pattern, null)) {
        long count = (Long) server.getAttribute(name, "Count");  // one bean per API version
        counts.merge(name.getKeyProperty("request"), count, Long::sum);
      }
      StringBuilder json = new StringBuilder("{");
      counts.forEach((api, count) -> json.append(json.length() > 1 ? "," : "")
          .append('"').append(api).append("\":").append(count));
      System.out.println(json.append('}'));
    }
  }
}
